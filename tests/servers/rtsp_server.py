#!/usr/bin/python3
"""Serve one media file over RTSP for tests, without re-encoding.

Run with Debian's interpreter (a venv cannot import Debian's ``gi``)::

    /usr/bin/python3 tests/servers/rtsp_server.py MEDIA [--port 8554] [--path stream] [--loop]

Serves rtsp://127.0.0.1:PORT/PATH from a shared media factory (several clients
watch the same pipeline), paced at real time by the RTSP sinks. The container
is demuxed and its H.264/H.265 video and AAC/Opus audio are passed through as
RTP. Prints ``ready rtsp://127.0.0.1:PORT/PATH`` once listening (``--port 0``
picks a free port and the line tells which) and exits 0 on SIGTERM/SIGINT.
Exit codes otherwise: 1 the file cannot be served, 2 GStreamer's RTSP server or
an element is missing, 3 the port cannot be bound.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstPbutils", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstPbutils, GstRtspServer
except (ImportError, ValueError) as exc:  # pragma: no cover - depends on the host
    print(f"error: GStreamer RTSP server bindings unavailable: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)

DEMUXERS = {
    "video/quicktime": "qtdemux",
    "application/x-3gp": "qtdemux",
    "video/x-matroska": "matroskademux",
    "video/webm": "matroskademux",
    "video/mpegts": "tsdemux",
}
# caps name -> (caps filter picking the demuxer pad, parser, payloader)
VIDEO = {
    "video/x-h264": ("video/x-h264", "h264parse", "rtph264pay config-interval=-1"),
    "video/x-h265": ("video/x-h265", "h265parse", "rtph265pay config-interval=-1"),
}
AUDIO = {
    "audio/mpeg4": ("audio/mpeg,mpegversion=(int){2,4}", "aacparse", "rtpmp4gpay"),  # AAC
    "audio/x-opus": ("audio/x-opus", "opusparse", "rtpopuspay"),
}


def codec_key(caps: Gst.Caps) -> str:
    """The caps name, with the MPEG version for audio/mpeg (AAC is 2 or 4; MP3, version 1, is not
    passed through: FFmpeg's RTP client takes the MPA payload for MP2 and loses its timestamps)."""
    structure = caps.get_structure(0)
    name = structure.get_name()
    if name == "audio/mpeg":
        found, version = structure.get_int("mpegversion")
        return "audio/mpeg1" if found and version == 1 else "audio/mpeg4"
    return name


class Unsupported(Exception):
    """The file has a container or codec this server does not pass through."""


def describe(media: Path) -> tuple[str, int, list[str]]:
    """The factory's launch line for ``media`` (demux, parse, payload each track), its duration in ns
    and the kind ("video"/"audio") of each payloader ``pay<i>`` / queue ``q<i>``."""
    info = GstPbutils.Discoverer.new(10 * Gst.SECOND).discover_uri(Gst.filename_to_uri(str(media)))
    caps = info.get_stream_info().get_caps()
    container = caps.get_structure(0).get_name() if caps else ""
    demuxer = DEMUXERS.get(container)
    if demuxer is None:
        raise Unsupported(f"unsupported container {container!r} in {media}")
    branches: list[str] = []
    kinds: list[str] = []
    for kind, table in (("video", VIDEO), ("audio", AUDIO)):
        streams = info.get_video_streams() if kind == "video" else info.get_audio_streams()
        if not streams:
            continue
        name = codec_key(streams[0].get_caps())
        if name not in table:
            raise Unsupported(f"{kind} codec {name!r} in {media} cannot be passed through")
        pad_caps, parser, payloader = table[name]
        i = len(branches)
        # The caps filter makes the demuxer link the right sometimes-pad, whatever the demuxer names it.
        branches.append(
            f'd. ! capsfilter caps="{pad_caps}" ! queue name=q{i} max-size-time=2000000000 ! {parser} ! '
            f"{payloader} name=pay{i} pt={96 + i}"
        )
        kinds.append(kind)
    if not branches:
        raise Unsupported(f"no video or audio track in {media}")
    location = GLib.strescape(str(media))
    launch = f'( filesrc location="{location}" ! {demuxer} name=d ' + " ".join(branches) + " )"
    return launch, info.get_duration(), kinds


class Looper:
    """Plays one media's file again and again, with timestamps that keep growing.

    A flushing segment seek once prepared makes the end of the file post SEGMENT_DONE instead of
    EOS; each SEGMENT_DONE triggers a seamless (non-flushing) segment seek back to 0. The demuxer
    starts each new segment at the running time of its last position, slightly before the end of
    the longest track, so a probe in front of each branch's queue sets a pad offset that makes
    play-through k start at exactly k * duration (no overlap, no step back), and drops the audio
    packets that lie before the segment start (AAC priming), which would otherwise go out with a
    bogus RTP timestamp."""

    def __init__(self, media: GstRtspServer.RTSPMedia, duration: int, kinds: list[str]) -> None:
        self.media = media
        self.duration = duration
        self.loops: dict[int, int] = {}  # seek seqnum -> play-through index
        self.count = 0
        bin_ = media.get_element()
        for i, kind in enumerate(kinds):
            queue_sink = bin_.get_by_name(f"q{i}").get_static_pad("sink")
            state = {"queue_sink": queue_sink, "start": None, "audio": kind == "audio"}
            queue_sink.get_peer().add_probe(
                Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, self.probe, state
            )
        media.connect("prepared", lambda _m: self.seek(first=True))

    def seek(self, first: bool = False) -> None:
        """Segment seek to the start (flushing for the first play-through, seamless afterwards)."""
        flags = Gst.SeekFlags.SEGMENT | (Gst.SeekFlags.FLUSH if first else Gst.SeekFlags.NONE)
        self.count = 0 if first else self.count + 1
        event = Gst.Event.new_seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        self.loops[event.get_seqnum()] = self.count
        self.media.get_element().send_event(event)

    def probe(self, _pad: Gst.Pad, info: Gst.PadProbeInfo, state: dict) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER:
            buf = info.get_buffer()
            start = state["start"]
            if state["audio"] and start is not None and buf.pts != Gst.CLOCK_TIME_NONE and buf.pts < start:
                return Gst.PadProbeReturn.DROP
            return Gst.PadProbeReturn.OK
        event = info.get_event()
        if event.type == Gst.EventType.SEGMENT:
            segment = event.parse_segment()
            state["start"] = segment.start
            k = self.loops.get(event.get_seqnum(), 0)
            # applied to this very segment event when it reaches the queue's sink pad
            state["queue_sink"].set_offset(k * self.duration - segment.base if k else 0)
        return Gst.PadProbeReturn.OK


def looping_media_type() -> type:
    """An RTSPMedia subclass that answers SEGMENT_DONE with the next segment seek.

    Defined on demand (after Gst.init), only for --loop."""

    class LoopingMedia(GstRtspServer.RTSPMedia):
        looper: Looper | None = None

        def do_handle_message(self, message: Gst.Message) -> bool:
            if message.type == Gst.MessageType.SEGMENT_DONE and self.looper is not None:
                self.looper.seek()
                return True
            return GstRtspServer.RTSPMedia.do_handle_message(self, message)

    return LoopingMedia


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("media", type=Path, help="file to serve (mp4/mkv/webm/ts with H.264/H.265 + AAC/Opus)")
    parser.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--path", default="stream", help="mount path, rtsp://127.0.0.1:PORT/PATH")
    parser.add_argument("--loop", action="store_true", help="play the file again at its end instead of ending")
    args = parser.parse_args(argv)

    Gst.init(None)
    media = args.media.resolve()
    if not media.is_file():
        print(f"error: no such file {media}", file=sys.stderr, flush=True)
        return 1
    try:
        launch, duration, kinds = describe(media)
    except GLib.Error as exc:
        print(f"error: cannot read {media}: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except Unsupported as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    try:  # fail now, not at the first client, when an element is missing
        Gst.parse_launch(launch.strip("() "))
    except GLib.Error as exc:
        print(f"error: GStreamer cannot build {launch}: {exc.message}", file=sys.stderr, flush=True)
        return 2
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    # A camera-like shared stream: with this clock mode the media is not seekable, so a client's
    # PLAY (FFmpeg always sends "Range: npt=0.000-") does not rewind the pipeline under the other
    # clients' feet; the server ignores the range and plays on.
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    if args.loop:
        factory.set_media_gtype(looping_media_type())
        factory.connect(
            "media-configure", lambda _f, rtsp_media: setattr(rtsp_media, "looper", Looper(rtsp_media, duration, kinds))
        )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    path = "/" + args.path.strip("/")
    server.get_mount_points().add_factory(path, factory)
    try:
        source_id = server.attach(None)
    except GLib.Error as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.message}", file=sys.stderr, flush=True)
        return 3
    if source_id == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 3

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}{path}", flush=True)
    loop.run()
    # Tear down: stop accepting, close client sessions (their media pipelines go to NULL).
    GLib.source_remove(source_id)
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
