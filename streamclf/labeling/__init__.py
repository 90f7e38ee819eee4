"""Label archives: files, folders and globs to per-file timelines, segments and subtitles.

``label_files`` is the ``label`` verb: it finds the inputs (``common``),
skips the files already labeled with the same models and config (the resume
key), runs an engine chosen by name from ``ENGINES`` (``local``: decode
processes and inference here; ``ray``: a Ray cluster), and writes each
file's outputs and the run summary (``outputs``). Every engine builds its
records with ``common.label_windows``, so the engine never changes a byte.
``iter_records`` gives one file's records without writing anything.
A file whose decoding stops before its end is labeled as far as it goes and
reported "partial", never "ok".

The engines are imported only when chosen: ``common`` and ``outputs`` never
import them, and they import only ``common``, so there is no import circle.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, load_config
from .common import Engine, file_windows, find_inputs, identity, inference_threads, label_windows, probe_duration
from .outputs import FileResult, Writer, top, write_summary

if TYPE_CHECKING:
    from ..classifier import Classifier

log = logging.getLogger(__name__)

__all__ = ["ENGINES", "FileResult", "iter_records", "label_files"]

ENGINES = {"local": ".local", "ray": ".ray"}  # name -> module (in this package) with an ``Engine`` class


def label_files(
    paths: list[str],
    out: str | Path,
    config: Config | None = None,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    force: bool = False,
    workers: int | None = None,
    plots: bool = False,
    threshold: float = 0.3,
    progress: bool = True,
    on_error: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> list[FileResult]:
    """Label every media file under ``paths`` into ``out``; returns one result per file.

    Resumes by default (files already labeled with the same models and
    config are skipped); ``force`` relabels. A bad file gives one line to
    ``on_error`` and an ``error`` row; it never stops the others. A file
    whose decoding stops before its end (cut, damaged) keeps the labels of
    what decoded, gives one line to ``on_error`` and a ``partial`` row.
    ``engine="ray"`` decodes and infers on a Ray cluster (``ray_address``,
    or a local Ray) and writes the same outputs here.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
    # Built before the models load: a missing Ray is said at once.
    runner: Engine = importlib.import_module(ENGINES[engine], __name__).Engine(workers, ray_address)
    config = config or load_config()
    out = Path(out)
    jobs = find_inputs(paths, include, exclude)
    # The engine starts first (the local decode processes), so that its start-up overlaps with loading
    # torch here; the inference threads are set once for the run, not switched per chunk.
    with runner.started(len(jobs)), inference_threads():
        from ..classifier import Classifier
        from ..resolve import resolve_config

        config = resolve_config(config)
        classifier = Classifier(config)
        ident = identity(config)
        writer = Writer(out, plots, threshold, config.window.hop)
        on_error = on_error or _log_error
        results: dict[int, FileResult] = {}
        todo = []
        for i, job in enumerate(jobs):
            done = None if force else writer.done(job, job.key(ident))
            if done is not None:
                results[i] = FileResult(
                    str(job.path),
                    job.rel,
                    done.get("status", "ok"),
                    done.get("duration"),
                    done.get("windows", 0),
                    top(done["segments"]),
                    done.get("partial"),
                    len(done.get("warnings", [])),
                    resumed=True,
                )
            else:
                todo.append(i)
        started = time.time()
        durations = {i: probe_duration(jobs[i].path) for i in todo}
        with _Progress(len(todo), sum(d or 0.0 for d in durations.values()), progress) as bar:
            stream = runner.run(jobs, todo, classifier, config, ident)
            for i, records, end in stream:
                job = jobs[i]
                if end["fatal"] or not records:
                    message = (
                        end["errors"][-1]
                        if end["fatal"] and end["errors"]
                        else f"{job.path}: no windows: too little decodable media"
                    )
                    on_error(message)
                    results[i] = FileResult(str(job.path), job.rel, "error", end["duration"], error=message)
                else:
                    summary = writer.write(job, job.key(ident), records, end)
                    if end["partial"]:
                        on_error(end["partial"])
                    results[i] = FileResult(
                        str(job.path),
                        job.rel,
                        summary["status"],
                        end["duration"],
                        len(records),
                        top(summary["segments"]),
                        end["partial"],
                        len(end["errors"]),
                    )
                bar.advance(durations.get(i) or end["duration"] or 0.0)
                bar.file_done()
        ordered = [results[i] for i in sorted(results)]
        write_summary(
            out,
            ordered,
            {
                "started": started,
                "finished": time.time(),
                "inputs": list(paths),
                "identity": ident,
                "config": json.loads(config.model_dump_json()),
                "engine": engine,
                "threshold": threshold,
            },
        )
        return ordered


def iter_records(
    path: str | Path, config: Config | None = None, classifier: Classifier | None = None
) -> Iterator[dict[str, Any]]:
    """Window records of one file, in order, as they are computed (clip mode; no files written).

    A ``classifier`` given (many files, one load) must have been built with ``config`` (default: its own).
    """
    from ..classifier import Classifier
    from ..recorder import Recorder
    from ..resolve import resolve_config

    if classifier is not None and config is None:
        config = classifier.config
    config = resolve_config(config or load_config())
    if classifier is not None:
        classifier.check(config)
    classifier = classifier or Classifier(config)
    name = Path(path).name
    recorder, memory = Recorder(classifier, config), classifier.memory(name)
    state = None
    for windows, told in file_windows(path, name, config):
        state = told  # the last one says whether decoding failed
        if windows:
            yield from label_windows(classifier, recorder, memory, windows)
    if state is not None and state.fatal and state.errors:
        raise ValueError(state.errors[-1])


class _Progress:
    """Files done, hours of media, media-seconds per wall-second and ETA (rich; plain lines off a terminal)."""

    def __init__(self, total_files: int, total_media: float, show: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.started = time.monotonic()
        self.media = 0.0
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not show or not self.console.is_terminal,
        )
        self.task = self.progress.add_task(
            "labeling", total=max(total_media, 1e-6), files=f"0/{total_files} files", speed=""
        )
        self.total_files, self.files = total_files, 0

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def advance(self, media_seconds: float) -> None:
        self.media += media_seconds
        rate = self.media / max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, advance=media_seconds, speed=f"{self.media / 3600:.2f} h media, {rate:.1f}x")

    def file_done(self) -> None:
        self.files += 1
        self.progress.update(self.task, files=f"{self.files}/{self.total_files} files")


def _log_error(message: str) -> None:
    """A file's one error line, through the ``streamclf`` logger (the CLI prints it as ``streamclf: error: ...``)."""
    log.error("error: %s", message)
