"""The ``local`` engine of ``streamclf label``: decoding in worker processes, inference in this one.

Decoding runs ahead in ``decode_worker`` processes (one socket each, no shared
queue or lock); inference stays in this process (one copy of the models),
through the shared record builder ``common.label_windows``, with a memory
per file (``classifier.Memory``) dropped when the file is done. A file whose
decoder hangs or dies is reported as an error; the others go on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..decode_worker import DecodeProcess
from .common import Job, Stream, label_windows

if TYPE_CHECKING:
    from ..classifier import Classifier


class Engine:
    """Decode processes started before the models load (their start-up overlaps loading torch)."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers = workers
        self.decoders: list[DecodeProcess] = []

    @contextmanager
    def started(self, files: int) -> Iterator[None]:
        """Up to ``workers`` decode processes (one per file at most), all stopped at the end whatever happened."""
        self.decoders = [DecodeProcess.start() for _ in range(min(self.workers or default_workers(), files))]
        try:
            yield
        finally:
            for d in self.decoders:
                d.stop()

    def run(self, jobs: list[Job], todo: list[int], classifier: Classifier, config: Config, ident: str) -> Stream:
        return run_local(jobs, todo, classifier, config, self.decoders, ident)


def default_workers() -> int:
    """Decode processes: leave a core for inference."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def run_local(
    jobs: list[Job],
    todo: list[int],
    classifier: Classifier,
    config: Config,
    decoders: list[DecodeProcess],
    ident: str,
) -> Stream:
    """Decode in the started ``decoders``, infer here; yields (job index, records, end info) per file.

    The watchdog (``sources.file_timeout``) counts only the time this process spent waiting for a
    decoder: time spent on inference, its own or another file's, while the decoder waits to hand over
    windows is not the decoder's fault, however slow the machine.
    """
    from ..recorder import Recorder

    if not todo:
        return
    config_json = config.model_dump_json()
    queued = list(todo)
    recorder = Recorder(classifier, config)
    records: dict[int, list[dict[str, Any]]] = {i: [] for i in todo}
    memory = {i: classifier.memory(jobs[i].rel) for i in todo}  # each file's, dropped with its records
    remaining = set(todo)
    limit = config.sources.file_timeout
    # One socket per decode process, no shared queue or lock: a process that dies or is killed
    # mid-message costs its own file, never the others.

    def hand_out(d: DecodeProcess, tries: int = 3) -> None:
        d.index, d.quiet = (queued.pop(0) if queued else None), 0.0
        try:
            d.conn.send(None if d.index is None else (d.index, str(jobs[d.index].path), jobs[d.index].rel))
        except OSError:  # it died between files: a new one takes the file
            if d.index is not None:
                queued.insert(0, d.index)
            d.stop()
            if queued and tries > 1:
                decoders[decoders.index(d)] = replacement = DecodeProcess.start(config_json)
                hand_out(replacement, tries - 1)

    def finished(index: int) -> list[dict[str, Any]]:
        remaining.discard(index)
        memory.pop(index)
        return records.pop(index)

    def failed(index: int, why: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        finished(index)
        return index, [], {"duration": None, "fatal": True, "partial": None, "errors": [f"{jobs[index].path}: {why}"]}

    try:
        for d in decoders[: len(todo)]:
            d.configure(config_json)
            hand_out(d)
        while remaining:
            busy = [d for d in decoders if d.index is not None]
            if not busy:  # every decoder died and none could be started: say so for what is left
                for i in sorted(remaining):
                    yield failed(i, "no decoding process could be started")
                break
            waited = time.monotonic()
            ready = wait([d.conn for d in busy], timeout=min(5.0, limit / 4))
            waited = time.monotonic() - waited
            for d in busy:
                index = d.index
                assert index is not None  # busy: it holds a file
                if d.conn not in ready:
                    d.quiet += waited
                    if d.quiet <= limit:
                        continue
                    d.stop()  # stuck in FFmpeg: a hung mount, a pipe with no writer
                    yield failed(index, f"decoding made no progress for {limit:g}s")
                else:
                    try:
                        _, kind, payload = d.conn.recv()
                    except (EOFError, OSError):
                        d.stop()
                        yield failed(index, f"the decoding process died (exit code {d.exitcode})")
                    else:
                        d.quiet = 0.0
                        if kind == "windows":
                            records[index] += label_windows(
                                classifier,
                                recorder,
                                memory[index],
                                payload,
                                jobs[index].key(ident)[:12],
                                len(records[index]),
                            )
                        else:
                            yield index, finished(index), payload
                            hand_out(d)
                        continue
                if queued:
                    decoders[decoders.index(d)] = replacement = DecodeProcess.start(config_json)
                    hand_out(replacement)
    finally:
        for d in decoders:
            d.stop(wait=True)
