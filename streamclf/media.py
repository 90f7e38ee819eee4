"""The file name extensions taken for media when a folder is searched (``label``, ``train``).

One list, so a folder that ``label`` reads and one that ``train`` reads hold the
same files. (``label`` always tries a file named outright, whatever its extension.)
"""

MEDIA_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".mkv",
        ".mov",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".ts",
        ".m2ts",
        ".m4v",
        ".flv",
        ".wmv",
        ".3gp",
        ".wav",
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
    }
)
