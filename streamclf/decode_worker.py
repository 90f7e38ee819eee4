"""`label`'s decode processes: started as ``python -m streamclf.decode_worker``, one socket each.

Why not multiprocessing: its spawn start re-imports the caller's main module
in every child, so a plain script calling ``label_files`` without an
``if __name__ == "__main__":`` guard ran itself again in each decode process
(and every file failed), and ``python -m streamclf`` imported torch there
for nothing (seconds of CPU per process). This module imports only what
decoding needs: PyAV, numpy and the config.

The parent and a child talk over one socket per process, in pickled
messages (``multiprocessing.connection.Connection``): the config JSON once,
then ``(index, path, name)`` per file (``None``: stop); the child answers
``(index, "windows", [Window, ...])`` per chunk, then ``(index, "end", info)``.
A child ends quietly with its parent: on Linux the kernel kills it when the
parent dies (``PR_SET_PDEATHSIG``, which also frees one stuck in FFmpeg on a
FIFO; strictly, when the parent's thread that started it ends, which
``label_files`` outlives), elsewhere a thread watches the parent's pid; a
closed socket is an expected end, never a traceback.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Decoding uses no BLAS or OpenMP: without these, numpy's BLAS would start an idle thread per core in
# every decode process.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class DecodeProcess:
    """A decode process, the parent's end of its socket, the file it is on and how long it has been quiet."""

    process: subprocess.Popen
    conn: Connection
    index: int | None = None
    quiet: float = 0.0  # seconds the parent spent waiting without hearing from it, since its last message

    @classmethod
    def start(cls, config_json: str | None = None) -> DecodeProcess:
        """A new process; it decodes once it has the config (now, or later with ``configure``)."""
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[1])  # this streamclf, whatever the caller's sys.path was
        env = {
            **os.environ,
            **CHILD_ENV,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        }
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamclf.decode_worker", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        decoder = cls(process, Connection(ours.detach()))
        if config_json is not None:
            decoder.configure(config_json)
        return decoder

    def configure(self, config_json: str) -> None:
        try:
            self.conn.send(config_json)
        except OSError:  # it died at once: the first task finds out and replaces it
            pass

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def stop(self, wait: bool = False) -> None:
        """Ask politely when idle (``wait``), else kill; either way reap it."""
        if wait and self.index is None and self.process.poll() is None:
            try:
                self.conn.send(None)
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # stuck in the kernel (a dead mount): the kernel reaps it later
            pass
        self.conn.close()
        self.index = None


def _die_with(parent: int) -> None:
    """End this process as soon as ``parent`` does (a crash or kill -9 of `label` must not leave it behind)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before the request took effect
                    os._exit(0)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def serve(conn: Connection) -> None:
    """Decode the files the parent sends, chunk by chunk, until told to stop."""
    from .config import Config
    from .labeling.common import decode_chunks

    if (config_json := conn.recv()) is None:  # stopped before it had anything to do
        return
    config = Config.model_validate_json(config_json)
    while (task := conn.recv()) is not None:
        index, path, name = task
        end: dict[str, Any] = {}
        for windows in decode_chunks(path, name, config, end):
            conn.send((index, "windows", windows))
        conn.send((index, "end", end))


def main(argv: list[str]) -> None:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    conn = Connection(fd)
    try:
        serve(conn)
    except (EOFError, OSError):  # the parent hung up or is gone: an expected end, nothing to say
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
