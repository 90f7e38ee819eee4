"""Broken media made from the shared real clips: the inputs of the bad-media suite.

Every input is derived deterministically (a seeded generator) from a few
short real seed clips, so a failure can be reproduced by its name alone.
Each input carries the kind of damage it has, for the figures.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av


@dataclass(frozen=True)
class Broken:
    path: Path
    kind: str  # truncated, header_flips, payload_flips, keyframe, swapped, zero, huge_dims, odd_audio, garbage


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def seeds(data: Path, folder: Path) -> list[Path]:
    """Short real clips in four containers and codec families (H.264/AAC, H.264/Opus, MPEG-1/MP2, audio only)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "bbb.mp4", folder / "pancake.mkv", folder / "grid.mpg", folder / "bark.wav", folder / "bell.ogg"]
    _ffmpeg("-ss", "20", "-t", "4", "-i", str(data / "media/bbb_360p_60s.mp4"), "-c", "copy", str(out[0]))
    _ffmpeg("-t", "4", "-i", str(data / "media/flipping_a_pancake.mkv"), "-c", "copy", str(out[1]))
    _ffmpeg("-i", str(data / "media/grid/bbaf2n.mpg"), "-c", "copy", str(out[2]))
    _ffmpeg("-i", str(data / "sounds/scratch/Animal/Dog1.wav"), "-af", "apad=pad_dur=2", str(out[3]))
    _ffmpeg("-i", str(data / "sounds/freedesktop/phone-incoming-call.oga"), "-t", "4", "-c:a", "libvorbis", str(out[4]))
    return out


def _keyframe_spans(path: Path) -> list[tuple[int, int]]:
    """(byte offset, size) of the video keyframe packets, from the container's own index."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            return []
        return [(p.pos, p.size) for p in c.demux(video=0) if p.is_keyframe and p.pos is not None and p.size > 64]


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int, n: int) -> None:
    for _ in range(n):
        i = rng.randrange(lo, max(lo + 1, min(hi, len(data))))
        data[i] ^= 1 << rng.randrange(8)


def _huge_y4m(path: Path) -> Path:
    path.write_bytes(b"YUV4MPEG2 W99999 H99999 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    return path


def _huge_mjpeg(folder: Path) -> Path:
    """An MJPEG AVI whose every frame declares 65500x65500 in its SOF0 header."""
    src = folder / "mjpeg_src.avi"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=3", "-c:v", "mjpeg", str(src))
    data = bytearray(src.read_bytes())
    i = data.find(b"\xff\xc0")
    while i != -1:
        data[i + 5 : i + 9] = struct.pack(">HH", 65500, 65500)
        i = data.find(b"\xff\xc0", i + 2)
    out = folder / "huge_mjpeg.avi"
    out.write_bytes(bytes(data))
    src.unlink()
    return out


def generate(data: Path, folder: Path, per_seed: int = 11, seed: int = 0) -> list[Broken]:
    """``per_seed`` inputs per kind of damage and seed clip in ``folder``, plus fixed ones (224 by default)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    clips = seeds(data, folder / "seeds")
    out: list[Broken] = []

    def save(name: str, payload: bytes, kind: str) -> None:
        path = folder / name
        path.write_bytes(payload)
        out.append(Broken(path, kind))

    for clip in clips:
        raw = clip.read_bytes()
        stem, ext = clip.stem, clip.suffix
        for k in range(per_seed):
            cut = rng.randrange(16, len(raw))
            save(f"{stem}_trunc{k}{ext}", raw[:cut], "truncated")
        for k in range(per_seed):
            b = bytearray(raw)
            _flip(b, rng, 0, 4096, rng.randrange(1, 16))
            save(f"{stem}_hdrflip{k}{ext}", bytes(b), "header_flips")
        for k in range(per_seed):
            b = bytearray(raw)
            _flip(b, rng, 4096, len(b), rng.randrange(1, 200))
            save(f"{stem}_flip{k}{ext}", bytes(b), "payload_flips")
        spans = _keyframe_spans(clip)
        for k in range(per_seed // 2 if spans else 0):
            pos, size = spans[k % len(spans)]
            b = bytearray(raw)
            start = pos + size // 4
            b[start : start + size // 2] = rng.randbytes(size // 2)
            save(f"{stem}_keyframe{k}{ext}", bytes(b), "keyframe")
        for other in {".mp4", ".mkv", ".mpg", ".wav", ".ogg"} - {ext}:
            save(f"{stem}_as{other}", raw, "swapped")
        save(f"{stem}_headonly{ext}", raw[: rng.randrange(64, 1024)], "truncated")
        save(f"{stem}_garbage{ext}", rng.randbytes(len(raw) // 4), "garbage")
    for ext in (".mp4", ".mkv", ".wav"):
        save(f"empty{ext}", b"", "zero")
    save("text.mp4", b"this is not a video\n" * 50, "garbage")
    out.append(Broken(_huge_y4m(folder / "huge.y4m"), "huge_dims"))
    out.append(Broken(_huge_mjpeg(folder), "huge_dims"))
    grid = clips[2]
    for name, args in {
        "rate7350.mkv": ["-ar", "7350", "-c:a", "pcm_s16le"],
        "rate1000.mkv": ["-ar", "1000", "-c:a", "pcm_s16le"],
        "rate384k.mkv": ["-ar", "384000", "-c:a", "pcm_s16le"],
        "rate11025.mp4": ["-ar", "11025", "-c:a", "aac"],
        "surround51.mkv": ["-af", "pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0", "-c:a", "pcm_s16le"],
        "octo.wav": ["-af", "pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0"],
        "tri.mkv": ["-af", "pan=3.0|c0=c0|c1=c0|c2=c0", "-c:a", "pcm_s16le"],
        "u8_2ch.wav": ["-ac", "2", "-c:a", "pcm_u8"],
    }.items():
        path = folder / name
        _ffmpeg("-i", str(grid), *(["-c:v", "copy"] if not name.endswith(".wav") else ["-vn"]), *args, str(path))
        out.append(Broken(path, "odd_audio"))
    return out


def decodable_seconds(path: Path, max_errors: int = 50) -> float:
    """How much media FFmpeg itself can decode from ``path`` (the oracle for "has good parts").

    Independent of streamclf's decoder: plain PyAV, every packet of the
    first video and audio stream, errors skipped; the longer track counts.
    """
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return 0.0
    with container:
        streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1])]
        if not streams:
            return 0.0
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        errors = 0
        try:
            for packet in container.demux(streams):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    errors += 1
                    if errors >= max_errors:
                        break
                    continue
                for frame in frames:
                    if frame.time is None:
                        continue
                    i = packet.stream.index
                    end = frame.time + (frame.samples / frame.sample_rate if isinstance(frame, av.AudioFrame) else 0.0)
                    first.setdefault(i, frame.time)
                    last[i] = max(last.get(i, end), end)
        except av.error.FFmpegError:
            pass
    return max((last[i] - first[i] for i in last), default=0.0)


def decodable(files: list[Path], scratch: Path, cwd: Path, timeout: float) -> dict[str, float]:
    """``decodable_seconds`` of each file by name, computed in a process of its own: a crash in FFmpeg on a
    broken file must not take the caller (the suite, the benchmark) down with it."""
    oracle = scratch / "oracle.json"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pathlib import Path; "
            "from tests.reliability.media import decodable_seconds as d; "
            "json.dump({p: d(Path(p)) for p in sys.argv[2:]}, open(sys.argv[1], 'w'))",
            str(oracle),
            *map(str, files),
        ],
        check=True,
        cwd=cwd,
        timeout=timeout,
    )
    return {Path(p).name: s for p, s in json.loads(oracle.read_text()).items()}


@dataclass
class Outcome:
    """What one streamclf process made of a set of broken inputs."""

    returncode: int | None  # None: killed by the timeout (a hang)
    crashed: bool  # died by a signal or printed a traceback
    records: dict[str, int]  # window records per input file name
    error_lines: dict[str, int]  # "streamclf: error:" lines naming each input
    stderr: str


def _streamclf(args: list[str], timeout: float, cwd: Path) -> tuple[int | None, str]:
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamclf", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired as e:
        return None, (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    return done.returncode, done.stderr


def _outcome(names: list[str], rc: int | None, stderr: str, records: dict[str, int]) -> Outcome:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("streamclf: error:")]
    errors = {n: sum(f"/{n}:" in ln or f" {n}:" in ln for ln in lines) for n in names}
    crashed = (rc is not None and rc not in (0, 1)) or "Traceback (most recent call last)" in stderr
    return Outcome(rc, crashed, records, errors, stderr)


def label_outcome(files: list[Path], out: Path, cwd: Path, timeout: float = 900.0) -> Outcome:
    """``streamclf label`` over all inputs in one process (one bad file must not stop the rest), detector on."""
    import csv

    rc, stderr = _streamclf(["label", *map(str, files), "--out", str(out), "--no-progress", "--detector"], timeout, cwd)
    records: dict[str, int] = {}
    summary = out / "summary.csv"
    if summary.exists():
        with summary.open() as f:
            records = {
                Path(r["path"]).name: int(r["windows"] or 0)
                for r in csv.DictReader(f)
                if r["status"] in ("ok", "partial")
            }  # partial: labeled up to the damage
    return _outcome([f.name for f in files], rc, stderr, records)


def run_outcome(files: list[Path], out: Path, cwd: Path, timeout: float = 600.0) -> Outcome:
    """``streamclf run`` with every input as a source of one process (each its own decoder thread), detector on."""
    import json

    rc, stderr = _streamclf(["run", *map(str, files), "--no-dashboard", "--out", str(out), "--detector"], timeout, cwd)
    records: dict[str, int] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            if "type" not in record:
                records[record["source"]] = records.get(record["source"], 0) + 1
    return _outcome([f.name for f in files], rc, stderr, records)
