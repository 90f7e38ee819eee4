"""What every ``label`` engine shares: the inputs, the resume key, decoding in chunks, and the record builder.

Every file goes through the same classifier and ``Recorder`` as a live run, one
file at a time in fixed-size chunks of windows, so the same file, head and
config give the same records whatever else the job holds and whichever
engine runs it. The resume key is the file's path, size and mtime plus the
model/config identity; the config fields that do not change a record are
marked in ``config.py`` (``json_schema_extra={"output": False}``), not listed here.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from ..config import Config, SourcesConfig
from ..media import MEDIA_EXTENSIONS
from ..sources import Decoder, SourceSpec
from ..stages import Feed
from ..types import SourceEnd, SourceError, SourceInfo, Window
from ..windows import Windower, WindowSpec

if TYPE_CHECKING:
    from ..classifier import Classifier, Memory
    from ..recorder import Recorder

CHUNK = 16  # windows per inference batch: fixed, so results never depend on timing
SCRATCH = ".partial"  # unfinished outputs; emptied at the start of every run
DROP = ("id", "time", "latency_ms")  # live-run fields; batch records are deterministic without them
# Torch threads for label's inference, in every engine and on every machine: CPU convolutions sum in an
# order that depends on the thread count (1 vs 2 threads moved a score from 0.1699 to 0.17), so a count
# taken from the machine or the engine (Ray gives an actor one thread per CPU) would change the bytes.
THREADS = 2
SHORT = 1.0  # seconds: decoded media ending this much (or 2%) before the declared duration is a cut file
Stream = Iterator[tuple[int, list[dict[str, Any]], dict[str, Any]]]  # what an engine yields: (job index, records, end)


class Engine(Protocol):
    """What ``label_files`` asks of an engine (``labeling.ENGINES`` names them); made with ``(workers, address)``."""

    def started(self, files: int) -> AbstractContextManager[None]:
        """Whatever the engine starts before the models load, stopped at the end."""
        ...

    def run(self, jobs: list[Job], todo: list[int], classifier: Classifier, config: Config, ident: str) -> Stream:
        """Label ``jobs[i] for i in todo``; yields (job index, records, end info) per file, as files finish."""
        ...


@dataclass
class Job:
    """One input file and where its outputs go (``rel`` mirrors the input tree)."""

    path: Path
    rel: str
    size: int = 0
    mtime_ns: int = 0

    def key(self, identity: str) -> str:
        raw = json.dumps([str(self.path.resolve()), self.size, self.mtime_ns, identity])
        return hashlib.sha1(raw.encode()).hexdigest()


def find_inputs(paths: list[str], include: list[str] | None = None, exclude: list[str] | None = None) -> list[Job]:
    """Files, folders (recursive) and globs, in a stable order.

    Folder and glob matches are kept when their name matches ``include``
    (default: known media extensions) and no ``exclude`` pattern; a file
    named on the command line is always tried (and fails clearly if it is
    not media; named pipes too). Outputs mirror the tree under each folder argument.
    """

    def wanted(p: Path) -> bool:
        ok = any(fnmatch.fnmatch(p.name, pat) for pat in include) if include else p.suffix.lower() in MEDIA_EXTENSIONS
        return ok and not any(fnmatch.fnmatch(p.name, pat) for pat in exclude or ())

    jobs: dict[str, Job] = {}
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = [(f, f.relative_to(p).as_posix()) for f in sorted(p.rglob("*")) if f.is_file() and wanted(f)]
            found = [(f, r) for f, r in found if not r.startswith(SCRATCH + "/")]
        elif p.exists():  # a file, or a named pipe something writes media into
            found = [(p, p.name)] if not any(fnmatch.fnmatch(p.name, pat) for pat in exclude or ()) else []
        else:
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise FileNotFoundError(f"{arg}: no such file or folder, and no file matches it")
            base = Path(os.path.commonpath([m.parent for m in matches]))
            found = [(m, m.relative_to(base).as_posix()) for m in matches if wanted(m)]
        for f, rel in found:
            if rel in jobs and jobs[rel].path.resolve() != f.resolve():
                raise ValueError(f"{f}: would write the same outputs as {jobs[rel].path} ({rel}); label them apart")
            st = f.stat()
            jobs[rel] = Job(f, rel, st.st_size, st.st_mtime_ns)
    return list(jobs.values())


def no_output_fields(model: type[BaseModel] = Config) -> dict[str, Any]:
    """The fields marked ``json_schema_extra={"output": False}`` in ``model`` and its sub-models, as an
    ``exclude`` for ``model_dump_json``: settings that change how a run goes, never a record."""
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("output") is False:
            out[name] = True
        elif isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            if sub := no_output_fields(f.annotation):
                out[name] = sub
    return out


def identity(config: Config) -> str:
    """What makes labels differ besides the file: config, encoder weights and the head."""
    from ..encoders import MODELS

    parts = [config.model_dump_json(exclude=no_output_fields())]
    parts += [MODELS[getattr(config, m).encoder].weights.id for m in ("audio", "video")]
    if config.fusion.head:
        head = Path(config.fusion.head)
        parts += [hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(head.glob("*")) if p.is_file()]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


@dataclass
class Decoded:
    """What decoding one file has told so far: its info, problems, and how far the media went."""

    path: str
    info: SourceInfo | None = None
    errors: list[str] = field(default_factory=list)
    fatal: bool = False
    ended_early: bool = False  # the decoder stopped on an error before the end of the file
    reached: float = -math.inf  # where the decoded audio or video ends, on the file's clock

    def partial(self) -> str | None:
        """Why the labels stop before the end of the file (cut or damaged), or None when they do not."""
        if self.fatal:
            return None
        if self.ended_early:
            return self.errors[-1] if self.errors else f"{self.path}: decoding stopped early"
        declared = self.info.duration if self.info else None
        if declared and self.info is not None:
            got = max(0.0, self.reached - self.info.start)
            if declared - got > max(SHORT, 0.02 * declared):
                return f"{self.path}: the media ends at {got:.1f}s of the {declared:.1f}s the file declares"
        return None

    def end(self) -> dict[str, Any]:
        """The end info every engine reports for a file."""
        return {
            "duration": self.info.duration if self.info else None,
            "errors": list(self.errors),
            "fatal": self.fatal,
            "partial": self.partial(),
        }


def file_windows(
    path: str | Path, name: str, config: Config, chunk: int = CHUNK
) -> Iterator[tuple[list[Window], Decoded]]:
    """Decode one file into chunks of windows: yields (windows, what decoding has told so far)."""
    w = config.window
    feed = Feed(256, droppable=lambda item: False)
    decoder = Decoder(
        SourceSpec(url=str(path), name=name),
        feed,
        fps=w.fps,
        max_side=w.max_side,
        short_side=w.short_side,
        settings=config.sources.model_copy(update={"realtime": False}),
    )
    windower = Windower(name, WindowSpec(w.length, w.hop, w.min_audio))
    decoder.start()
    state, pending = Decoded(str(path)), []
    try:
        while True:
            item = feed.get()
            if isinstance(item, SourceInfo):
                state.info = item
            elif isinstance(item, SourceError):
                state.errors.append(item.message)
                state.fatal |= item.fatal
            elif isinstance(item, SourceEnd):
                state.ended_early = bool(item.stats.get("ended_early"))
            pending += windower.push(item)
            state.reached = windower.data_end
            while len(pending) >= chunk:
                yield pending[:chunk], state
                pending = pending[chunk:]
            if isinstance(item, SourceEnd):
                break
        yield pending, state
    finally:
        decoder.stop()


def decode_chunks(path: str, name: str, config: Config, end: dict[str, Any]) -> Iterator[list[Window]]:
    """A file's non-empty chunks of windows; then ``end`` holds duration, errors, fatal and partial."""
    state = Decoded(path)
    try:
        for windows, told in file_windows(path, name, config):
            state = told  # the last one is read after the loop, or after a failure
            if windows:
                yield windows
    except Exception as e:  # one bad file never stops the batch
        state.errors.append(f"{path}: {e}")
        state.fatal = True
    end.update(state.end())


@contextmanager
def inference_threads() -> Iterator[None]:
    """Run label's inference on ``THREADS`` torch threads, and give the caller's setting back after."""
    import torch

    before = torch.get_num_threads()
    if before != THREADS:
        torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        if before != THREADS:
            torch.set_num_threads(before)


def label_windows(
    classifier: Classifier,
    recorder: Recorder,
    memory: Memory,
    windows: list[Window],
    key: str | None = None,
    first: int = 0,
) -> list[dict[str, Any]]:
    """A chunk of one file's windows to its records: the one record builder of every engine and of
    ``iter_records``, so the same chunks give the same bytes wherever they run. ``memory`` is the file's
    (``classifier.memory``, kept for the file and dropped with it); ``key`` adds ids (``{key}-{n:06d}``,
    counting from ``first``)."""
    with inference_threads():
        scored = classifier.score(windows, {memory.source: memory})
    records = []
    for n, s in enumerate(scored, first):
        record = {k: v for k, v in recorder(s, memory).to_dict().items() if k not in DROP}
        if key is not None:
            record["id"] = f"{key}-{n:06d}"
        records.append(record)
    return records


def probe_duration(path: Path) -> float | None:
    import av

    if not path.is_file():  # a named pipe would block here, and give its data to the wrong reader
        return None
    spec = SourceSpec(url=str(path), name=path.name)
    try:
        with av.open(spec.target, options=spec.options(SourcesConfig()), timeout=10.0, metadata_errors="replace") as c:
            return c.duration / av.time_base if c.duration else None
    except Exception:  # the decoder will say what is wrong with it
        return None
