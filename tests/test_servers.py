"""The local test servers work, checked with plain PyAV (not streamclf): RTSP with video and audio at
real-time pace, shared by clients, surviving a crash and restart on the same port, looping; HTTP
serving MPEG-TS (with Range); TCP servers that say nothing or nonsense make opens fail in bounded time."""

from __future__ import annotations

import time
import urllib.request
from itertools import pairwise
from pathlib import Path

import av
import pytest

from .conftest import shared
from .servers import HttpServer, RtspServer, black_hole_server, free_port, garbage_server, make_ts, remux

pytestmark = pytest.mark.timeout(60)

BBB = "media/bbb_360p_60s.mp4"  # H.264 640x360 24 fps + AAC, 60 s
RTSP_OPTIONS = {"rtsp_transport": "tcp"}


def read(container: av.container.InputContainer, until: float, wall_limit: float = 20.0) -> dict[str, list[float]]:
    """Decode both tracks until the video (or, without video, the audio) reaches ``until`` seconds;
    returns the frame times per kind ("video"/"audio"), frames without a timestamp left out."""
    times: dict[str, list[float]] = {"video": [], "audio": []}
    lead = "video" if container.streams.video else "audio"
    deadline = time.monotonic() + wall_limit
    for frame in container.decode(*container.streams):
        kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
        if frame.time is not None:
            times[kind].append(float(frame.time))
        if (times[lead] and times[lead][-1] >= until) or time.monotonic() > deadline:
            break
    return times


def assert_increasing(times: list[float], *, max_gap: float = 0.5) -> None:
    steps = [b - a for a, b in pairwise(times)]
    assert steps and min(steps) > 0, f"timestamps do not increase: {times[:20]}..."
    assert max(steps) < max_gap, f"a gap of {max(steps):.3f} s in {times[:20]}..."


@pytest.fixture(scope="module")
def bbb() -> Path:
    return shared(BBB)


@pytest.fixture(scope="module")
def bbb_ts(bbb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ts(bbb, tmp_path_factory.mktemp("ts") / "bbb.ts")


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_rtsp_video_and_audio_at_real_time(bbb):
    with RtspServer(bbb, path="cam/main") as server:
        assert server.url.startswith("rtsp://127.0.0.1:") and server.url.endswith("/cam/main")
        with av.open(server.url, options=RTSP_OPTIONS, timeout=(10, 5)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            assert container.streams.video[0].codec_context.width == 640
            start = time.monotonic()
            times = read(container, until=4.0)
            wall = time.monotonic() - start
        assert len(times["video"]) >= 3 * 24 and len(times["audio"]) >= 3 * 40
        assert_increasing(times["video"])
        assert_increasing(times["audio"])
        # Paced at real time: ~4 s of media arrive over ~3+ s (av.open already buffered ~1 s), not in a burst.
        assert wall > 1.5, f"4 s of media came in {wall:.2f} s: the server does not pace at real time"
        server.stop()
        assert server.proc.returncode == 0, server.output  # SIGTERM is a clean exit


def test_rtsp_clients_share_one_stream(bbb):
    """A second client joining does not rewind the stream under the first one (the media is not seekable)."""
    with RtspServer(bbb) as server:
        with av.open(server.url, options=RTSP_OPTIONS, timeout=(10, 5)) as first:
            before = read(first, until=1.5)
            with av.open(server.url, options=RTSP_OPTIONS, timeout=(10, 5)) as second:
                # joined mid-GOP: its video waits for the next keyframe (10.4 s), but its audio flows now
                audio: list[float] = []
                for frame in second.decode(audio=0):
                    audio.append(frame.time)
                    if len(audio) >= 20:
                        break
                after = read(first, until=before["video"][-1] + 1.0)
        assert len(audio) >= 20
        video = before["video"] + after["video"]
        assert_increasing(video, max_gap=1.5)  # the first client stalls while the second opens, but never steps back


def test_rtsp_kill_and_restart_on_same_port(bbb):
    with RtspServer(bbb, port=free_port()) as server:
        port, url = server.port, server.url
        container = av.open(url, options=RTSP_OPTIONS, timeout=(10, 3))
        assert read(container, until=1.0)["video"]
        server.kill()
        assert not server.running and server.proc.returncode < 0
        start = time.monotonic()
        ended = False
        try:
            for _packet in container.demux():  # what was in flight, then EOF (or an error), soon
                if time.monotonic() - start > 10:
                    break
            else:
                ended = True
        except av.error.FFmpegError:
            ended = True
        assert ended and time.monotonic() - start < 5
        container.close()

        server.restart()
        assert server.running and server.port == port and server.url == url
        with av.open(url, options=RTSP_OPTIONS, timeout=(10, 5)) as again:
            times = read(again, until=1.0)
        assert times["video"] and times["audio"]
        assert times["video"][0] < 0.5  # a new session starts the file again


def test_rtsp_loop_keeps_timestamps_growing(bbb, tmp_path):
    clip = remux(bbb, tmp_path / "clip.mp4", seconds=2.0)
    with RtspServer(clip, loop=True) as server:
        with av.open(server.url, options=RTSP_OPTIONS, timeout=(10, 5)) as container:
            times = read(container, until=4.6)  # past the second end of the 2 s clip
    assert times["video"][-1] >= 4.5
    assert_increasing(times["video"], max_gap=0.3)
    assert_increasing(times["audio"], max_gap=0.3)


def test_rtsp_server_refuses_missing_media(tmp_path):
    with pytest.raises(FileNotFoundError):
        RtspServer(tmp_path / "absent.mp4").start()


def test_http_serves_ts_to_ffmpeg(bbb_ts):
    with HttpServer(bbb_ts.parent) as server:
        url = server.url(bbb_ts.name)
        with av.open(url, timeout=(5, 5)) as container:
            assert container.format.name == "mpegts"
            times = read(container, until=1e9)  # the whole file
        assert len(times["video"]) == 60 * 24 and len(times["audio"]) > 2500
        assert_increasing(times["video"])
        assert_increasing(times["audio"])

        request = urllib.request.Request(url, headers={"Range": "bytes=188-375"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 188-375/{bbb_ts.stat().st_size}"
            body = response.read()
        assert body == bbb_ts.read_bytes()[188:376] and body[0] == 0x47  # a TS packet's sync byte

        server.restart()  # same port, serving again
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) == bbb_ts.stat().st_size


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_black_hole_server_makes_open_time_out(scheme):
    with black_hole_server() as port:
        start = time.monotonic()
        with pytest.raises(av.error.FFmpegError):
            av.open(
                f"{scheme}://127.0.0.1:{port}/stream", options=RTSP_OPTIONS if scheme == "rtsp" else {}, timeout=(2, 2)
            )
        assert time.monotonic() - start < 6


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_garbage_server_makes_open_fail(scheme):
    with garbage_server() as port:
        start = time.monotonic()
        with pytest.raises(av.error.FFmpegError):
            av.open(
                f"{scheme}://127.0.0.1:{port}/stream", options=RTSP_OPTIONS if scheme == "rtsp" else {}, timeout=(2, 2)
            )
        assert time.monotonic() - start < 6
