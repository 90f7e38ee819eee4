"""Real local servers for network-source tests, all on 127.0.0.1.

- :class:`RtspServer` serves a media file over RTSP (GStreamer's RTSP server in a subprocess run with
  Debian's ``/usr/bin/python3``; H.264/H.265 + AAC/Opus passed through, paced at real time, one
  shared pipeline for all clients, optional looping), and can be killed and restarted on the same port.
- :class:`HttpServer` serves a folder over HTTP/1.1 from a thread, with Range support.
- :func:`make_ts` / :func:`remux` rewrap a file without re-encoding (e.g. MP4 to MPEG-TS for HTTP).
- :func:`black_hole_server` and :func:`garbage_server` are TCP servers that accept and then say
  nothing, or say nonsense.

Example::

    from tests.servers import HttpServer, RtspServer, black_hole_server, make_ts

    with RtspServer(media) as rtsp:            # skips the test if GStreamer's RTSP server is absent
        container = av.open(rtsp.url, options={"rtsp_transport": "tcp"}, timeout=(10, 10))
        ...
        rtsp.kill()                            # crash; rtsp.restart() serves again on the same port

    with HttpServer(tmp_path) as http:
        av.open(http.url("clip.ts"))

    with black_hole_server() as port:
        av.open(f"rtsp://127.0.0.1:{port}/x", timeout=(2, 2))   # raises after ~2 s

Notes for tests: a shared RTSP stream is not seekable (a client's PLAY does not rewind the others),
and a client joining a running stream sees video only from the next keyframe (bbb_360p_60s.mp4 has
them at 0, 10.4, 11.9, 15.75, 23.0 ... s). After a restart the file plays again from its start.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import pytest

HOST = "127.0.0.1"
GST_PYTHON = "/usr/bin/python3"  # Debian's interpreter: the only one that can import Debian's `gi`
RTSP_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_port_free(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
                return
            except OSError:
                time.sleep(0.05)


@functools.lru_cache(maxsize=1)
def gstreamer_rtsp_missing() -> str | None:
    """Why the RTSP server cannot run here, or None when /usr/bin/python3 imports GstRtspServer."""
    if not os.access(GST_PYTHON, os.X_OK):
        return f"{GST_PYTHON} is absent (the RTSP test server needs Debian's python3-gi)"
    code = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "gi.require_version('GstPbutils', '1.0'); from gi.repository import Gst, GstPbutils, GstRtspServer"
    )
    try:
        proc = subprocess.run([GST_PYTHON, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"{GST_PYTHON} took over 30 s to import GstRtspServer"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"{GST_PYTHON} cannot import GstRtspServer ({last}); apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-{base,good,bad}"
        )
    return None


def _pump(stream: IO[str], output: deque[str], ready: threading.Event | None, ports: list[int]) -> None:
    """Copy a server's output lines into ``output`` until EOF; on the ready line note the port, set ``ready``."""
    try:
        for line in stream:
            line = line.rstrip("\n")
            output.append(line)
            match = re.match(r"ready rtsp://[^:/]+:(\d+)/", line)
            if ready is not None and match:
                ports.append(int(match.group(1)))
                ready.set()
    except (OSError, ValueError):
        pass
    finally:
        stream.close()  # at EOF, i.e. once the process is gone


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, wait a little, then SIGKILL; used by stop() and as the finalizer of every server process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class RtspServer:
    """tests/servers/rtsp_server.py in a subprocess serving ``media`` at rtsp://127.0.0.1:PORT/PATH.

    ``port=None`` lets the first start pick a free port (race-free); later starts reuse it. Use as a
    context manager (start on enter, stop on exit); the process is also killed if the object is
    garbage-collected or the interpreter exits. ``loop=True`` plays the file again and again with
    timestamps that keep growing.
    """

    def __init__(
        self,
        media: Path,
        path: str = "stream",
        port: int | None = None,
        *,
        loop: bool = False,
        ready_timeout: float = 15.0,
    ) -> None:
        self.media = Path(media)
        self.path = path.strip("/")
        self.port = port
        self.loop = loop
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._output: deque[str] = deque(maxlen=200)  # last lines of stdout+stderr, for error messages
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """rtsp://127.0.0.1:PORT/PATH (the port is known once started, or when given)."""
        if self.port is None:
            raise RuntimeError("the port is chosen at start(); start the server first")
        return f"rtsp://{HOST}:{self.port}/{self.path}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def output(self) -> str:
        """The last lines the server printed (stdout and stderr)."""
        return "\n".join(self._output)

    def start(self) -> RtspServer:
        """Launch the server and wait (bounded) for its ready line; skip the test if GStreamer is absent."""
        if self.running:
            return self
        reason = gstreamer_rtsp_missing()
        if reason is not None:
            pytest.skip(reason)
        if not self.media.is_file():
            raise FileNotFoundError(self.media)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._launch(deadline)
            if code is None:
                return self
            # exit 3 = could not bind: after a crash the port may need a moment; retry until the deadline
            if code == 3 and self.port is not None and time.monotonic() < deadline - 0.5:
                time.sleep(0.2)
                continue
            if code == 2:  # bindings or elements missing
                pytest.skip(f"GStreamer cannot serve RTSP here: {self.output}")
            raise RuntimeError(f"RTSP server exited with {code} before it was ready:\n{self.output}")

    def _launch(self, deadline: float) -> int | None:
        """One attempt; None when ready, else the exit code (raises on timeout)."""
        args = [GST_PYTHON, str(RTSP_SCRIPT), str(self.media), "--port", str(self.port or 0), "--path", self.path] + (
            ["--loop"] if self.loop else []
        )
        self._output.clear()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc)
        ready = threading.Event()
        ports: list[int] = []
        # the pumps do not hold `self`, so that dropping the server object also ends its process
        threading.Thread(target=_pump, args=(proc.stdout, self._output, ready, ports), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, self._output, None, ports), daemon=True).start()
        while not ready.wait(0.05):
            if proc.poll() is not None:
                proc.wait()
                time.sleep(0.1)  # let the pumps collect the last words
                return proc.returncode
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"RTSP server not ready within {self.ready_timeout} s:\n{self.output}")
        self.port = ports[0]
        return None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (clients see their connection reset)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        """SIGTERM the server, wait up to 5 s, then SIGKILL."""
        if self.proc is not None:
            _terminate(self.proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def restart(self) -> RtspServer:
        """Stop (if still running) and start again on the same port."""
        self.stop()
        if self.port is not None:
            _wait_port_free(self.port, timeout=5)
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` support (206 + Content-Range), quiet logs, one request per connection."""

    protocol_version = "HTTP/1.1"
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".ts": "video/mp2t",
        ".mp4": "video/mp4",
        ".mkv": "video/x-matroska",
        ".webm": "video/webm",
    }

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass

    def send_head(self):  # type: ignore[override]
        self._range: tuple[int, int] | None = None
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip()) if header else None
        if match is None or not path.is_file() or match.group(1) == match.group(2) == "":
            return super().send_head()
        size = path.stat().st_size
        first, last = match.group(1), match.group(2)
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = path.open("rb")
        f.seek(start)
        self._range = (start, end)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return f

    def end_headers(self) -> None:
        if getattr(self, "_range", None) is None and self.command in ("GET", "HEAD"):
            self.send_header("Accept-Ranges", "bytes")
        # One request per connection, said out loud: FFmpeg reuses a connection that the server does
        # not announce as closing, and then reads EOF instead of its next response.
        self.send_header("Connection", "close")
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        try:
            if self._range is None:
                super().copyfile(source, outputfile)
                return
            remaining = self._range[1] - self._range[0] + 1
            while remaining > 0:
                chunk = source.read(min(64 * 1024, remaining))
                if not chunk:
                    break
                outputfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-file: fine
            self.close_connection = True


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        pass  # clients that hang up are normal here


class HttpServer:
    """Serves the files of ``directory`` at http://127.0.0.1:PORT/NAME from a thread.

    Plain 200 with Content-Length, or 206 for ``Range`` requests (FFmpeg seeks MP4 with them).
    Context manager; ``stop()`` / ``start()`` / ``restart()`` keep the same port.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        """URL of the file ``name`` (relative to the directory)."""
        if self.port is None:
            raise RuntimeError("start the server first")
        return f"http://{HOST}:{self.port}/{name.lstrip('/')}"

    def start(self) -> HttpServer:
        """Bind (to the same port as before, if any) and serve from a daemon thread."""
        if self._server is not None:
            return self
        handler = functools.partial(_RangeHandler, directory=str(self.directory))
        self._server = _QuietServer((HOST, self.port or 0), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (open transfers finish on their own threads)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def restart(self) -> HttpServer:
        """Stop and serve again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def remux(src: Path, dst: Path, *, format: str | None = None, seconds: float | None = None) -> Path:  # noqa: A002
    """Copy the video and audio packets of ``src`` into ``dst`` without re-encoding (PyAV).

    ``format`` forces the container (else guessed from ``dst``'s suffix); ``seconds`` keeps only the
    packets that decode in the first that many seconds of each stream (a clip for looping tests).
    The muxer inserts what the target needs (H.264 Annex B and ADTS headers for MPEG-TS).
    """
    import av  # the venv's PyAV; imported here so that the RTSP helpers work without it

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=format) as out:
        chosen = [s for s in inp.streams if s.type in ("video", "audio")]
        if not chosen:
            raise ValueError(f"{src} has no video or audio stream")
        mapping = {s.index: out.add_stream_from_template(s) for s in chosen}
        starts: dict[int, float] = {}
        for packet in inp.demux(*chosen):
            if packet.dts is None:  # the flushing packet at the end of each stream
                continue
            if seconds is not None:  # cut in decode order, so that every kept frame keeps its references
                t = float(packet.dts * packet.time_base)
                start = starts.setdefault(packet.stream.index, t)
                if t - start >= seconds:
                    continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return dst


def make_ts(src: Path, dst: Path) -> Path:
    """Remux ``src`` to MPEG-TS at ``dst`` without re-encoding; returns ``dst``."""
    return remux(src, dst, format="mpegts")


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def black_hole_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections, reads and discards what clients send,
    and never sends a byte. Yields its port; everything is closed on exit."""
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    sock = key.fileobj
                    if sock is listener:
                        with contextlib.suppress(BlockingIOError, OSError):
                            conn, _addr = listener.accept()
                            conn.setblocking(False)
                            conns.append(conn)
                            sel.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # the client gave up
                        sel.unregister(sock)
                        sock.close()

    thread = threading.Thread(target=serve, name="black-hole", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        _close_all([listener, *conns])


@contextlib.contextmanager
def garbage_server(chunk: int = 4096, interval: float = 0.01, seed: int = 0) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and sends each one random bytes
    (``chunk`` bytes every ``interval`` s) until the client hangs up. Yields its port."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def spew(conn: socket.socket, rng: random.Random) -> None:
        conn.settimeout(1.0)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn.sendall(rng.randbytes(chunk))
                stop.wait(interval)

    def serve() -> None:
        n = 0
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            n += 1
            threading.Thread(target=spew, args=(conn, random.Random(seed + n)), daemon=True).start()

    thread = threading.Thread(target=serve, name="garbage", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        _close_all([listener, *conns])


__all__ = [
    "GST_PYTHON",
    "HOST",
    "RTSP_SCRIPT",
    "HttpServer",
    "RtspServer",
    "black_hole_server",
    "free_port",
    "garbage_server",
    "gstreamer_rtsp_missing",
    "make_ts",
    "remux",
]
