"""The ``ray`` engine of ``streamclf label``: the same job as the local engine, on a Ray cluster.

A Ray Data pipeline of three steps:

1. the file list as a dataset (``ray.data.from_items``, one block per file);
2. a CPU map stage that decodes and windows each file with ``file_windows``
   (the very chunks of ``CHUNK`` windows the local engine makes) and emits
   ONE row per file holding all its chunks, pickled into bytes;
3. an actor pool (``map_batches`` with a callable class, one row at a time)
   that loads the classifier once per actor and runs
   ``Classifier.score`` on those chunks in order, with a fresh memory
   (``classifier.Memory``) per file, through the same record builder (``common.label_windows``, which
   also fixes the torch thread count), so every file's records are the local
   engine's, byte for byte.

Why a row per file and not a row per chunk: a file's records depend on what
came before in the same file (the smoothing state and the frame-embedding
cache in the file's memory), and Ray Data gives no way to send all
of a file's rows to one actor in order. A whole file in one row costs memory,
though (about 3 MB per second of 640 px video), so a file whose decoded
windows outgrow ``row_bytes`` is not shipped: its row says "deferred" and the
actor decodes it itself, chunk by chunk, as ``iter_records`` does (bounded
memory; decoding then overlaps inference only within that actor). Both ways
feed the same chunks to the same code, so the choice never changes a record.

A bad file gives an error end-info row, never a failed dataset: Python errors
are caught per file; a worker process that dies outright (a crash in a
decoder library) only loses its block, and the file is reported as an error.
Inputs must be readable at the same absolute path on every node.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from collections.abc import Generator, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, cast

from ..config import Config
from ..types import Window
from .common import THREADS, Job, Stream, decode_chunks, label_windows

if TYPE_CHECKING:
    from ..classifier import Classifier

ROW_BYTES = 128 << 20  # decoded windows a map-stage row may carry; bigger files are decoded by the actor
RETRIES = 2  # a file whose worker dies is tried this many more times, then reported (Ray Data retries forever)
MISSING = "the Ray engine lost this file (its worker process died)"


def plan(resources: dict[str, float]) -> dict[str, Any]:
    """Actor pool and decode-task sizes for a cluster's resources.

    One actor per GPU when there are GPUs; otherwise one per CPU, less a
    quarter of the CPUs (at least one) kept for the decode tasks, which
    would never be scheduled if the actors held every CPU.
    """
    cpus = float(resources.get("CPU", 1.0))
    gpus = int(resources.get("GPU", 0))
    actors = gpus if gpus else max(1, int(cpus) - max(1, int(cpus) // 4))
    actor_cpus = min(1.0, max(cpus - 1.0, cpus / 2) / actors)
    decode_cpus = min(1.0, cpus - actor_cpus * actors)
    return {"actors": actors, "actor_cpus": actor_cpus, "actor_gpus": 1 if gpus else 0, "decode_cpus": decode_cpus}


def _table(rows: list[dict[str, Any]], binary: str) -> Any:
    import pyarrow as pa

    cols = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    types = {"index": pa.int64(), binary: pa.large_binary(), "deferred": pa.bool_()}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()})


def _decode_stage(batch: Any, config_json: str, row_bytes: int) -> Any:
    """Map stage: each file (row) to one row with its pickled chunks and end info, or a deferred row."""
    config = Config.model_validate_json(config_json)
    out = []
    for row in batch.to_pylist():
        end: dict[str, Any] = {}
        chunks, size, deferred = [], 0, False
        seen: set[int] = set()
        # a generator function (annotated as an Iterator), so it can be closed early
        gen = cast(Generator[list[Window], None, None], decode_chunks(row["path"], row["name"], config, end))
        for windows in gen:
            chunks.append(windows)
            for w in windows:  # windows share frames: count each frame once, as pickle stores it once
                size += sum(f.image.nbytes for f in w.frames if id(f) not in seen)
                seen.update(id(f) for f in w.frames)
                size += w.audio.nbytes if w.audio is not None else 0
            if size > row_bytes:
                deferred = True
                gen.close()  # stops the decoder; the actor decodes this one itself, chunk by chunk
                break
        if deferred:
            payload, end = b"", {}
        else:
            payload = b"" if end["fatal"] else pickle.dumps(chunks, protocol=5)  # a failed file's labels are unused
        chunks.clear()  # at most the pickle and its Arrow copy alive at once
        out.append({**row, "chunks": payload, "deferred": deferred, "end": json.dumps(end)})
    return _table(out, "chunks")


class _Infer:
    """Actor: the classifier, loaded once; each row (a file) to its records, in order, with a fresh memory."""

    def __init__(self, config_json: str) -> None:
        import torch

        from ..classifier import Classifier
        from ..recorder import Recorder

        torch.set_num_threads(THREADS)  # the actor's own process: set once, not switched per chunk
        self.config = Config.model_validate_json(config_json)  # resolved by label_files
        self.classifier = Classifier(self.config)
        self.recorder = Recorder(self.classifier, self.config)

    def __call__(self, batch: Any) -> Any:
        out = []
        for row in batch.to_pylist():
            end: dict[str, Any] = json.loads(row["end"])
            try:
                if row["deferred"]:
                    records = self._label(
                        row["name"], row["key"], decode_chunks(row["path"], row["name"], self.config, end)
                    )
                else:
                    records = self._label(row["name"], row["key"], pickle.loads(row["chunks"]) if row["chunks"] else [])
            except Exception as e:  # inference failing on one file never fails the dataset
                records, end = (
                    [],
                    {
                        "duration": end.get("duration"),
                        "fatal": True,
                        "partial": None,
                        "errors": [*end.get("errors", []), f"{row['path']}: {type(e).__name__}: {e}"],
                    },
                )
            if end.get("fatal"):
                records = []
            out.append(
                {
                    "index": row["index"],
                    "path": row["path"],
                    "records": pickle.dumps(records, protocol=5),
                    "end": json.dumps(end),
                }
            )
        return _table(out, "records")

    def _label(self, name: str, key: str, chunks: Iterable[list[Window]]) -> list[dict[str, Any]]:
        memory = self.classifier.memory(name)
        records: list[dict[str, Any]] = []
        for windows in chunks:
            records += label_windows(self.classifier, self.recorder, memory, windows, key, len(records))
        return records


class RayMissing(ImportError):
    """The optional Ray dependency is not installed."""


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or ``RayMissing`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayMissing("the ray engine needs Ray: pip install 'streamclf[ray]'") from e
    return ray


class Engine:
    """Ray is checked for when the engine is made, before the models load: a missing Ray is said at once."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        require_ray()
        self.workers, self.address = workers, address

    def started(self, files: int) -> AbstractContextManager[None]:
        return nullcontext()  # Ray starts (or is joined) when the run begins

    def run(self, jobs: list[Job], todo: list[int], classifier: Classifier, config: Config, ident: str) -> Stream:
        return run_ray(jobs, todo, config, ident, address=self.address, num_cpus=self.workers)


def run_ray(
    jobs: list[Job],
    todo: list[int],
    config: Config,
    ident: str,
    address: str | None = None,
    num_cpus: int | None = None,
    row_bytes: int = ROW_BYTES,
) -> Stream:
    """Label ``jobs[i] for i in todo`` on Ray; yields (job index, records, end info) per file, as files finish.

    The same contract and records as ``local.run_local``. Joins the cluster
    at ``address`` ("auto", "ray://head:10001", ...) or starts a local Ray
    with ``num_cpus`` (default: all); what it started it shuts down. A Ray
    already initialized in this process is used as it is.
    """
    ray = require_ray()  # now, not at the first file: a missing Ray is said before any work starts
    return _run(ray, jobs, todo, config, ident, address, num_cpus, row_bytes)


def _run(
    ray: Any,
    jobs: list[Job],
    todo: list[int],
    config: Config,
    ident: str,
    address: str | None,
    num_cpus: int | None,
    row_bytes: int,
) -> Stream:
    if not todo:
        return
    from ray.data import DataContext

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        started = True
    ctx = DataContext.get_current()
    settings = {
        "enable_progress_bars": False,  # label_files has its own progress bar
        "print_on_execution_start": False,
        "max_errored_blocks": len(todo),  # a crashed worker loses its file, not the job
    }
    saved = {k: getattr(ctx, k) for k in settings if hasattr(ctx, k)}
    loggers = {name: logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")}
    levels = {name: lg.level for name, lg in loggers.items()}
    try:
        loggers["ray.data"].setLevel(logging.WARNING)  # no per-dataset chatter; errors and warnings still show
        loggers["ray.data._internal.progress"].setLevel(logging.ERROR)  # "progress bars disabled": on purpose
        for k in saved:
            setattr(ctx, k, settings[k])
        resources = ray.cluster_resources()
        if config.device == "cpu":  # asked not to use GPUs: don't hold them either
            resources.pop("GPU", None)
        sizes = plan(resources)
        items = [
            {"index": i, "path": str(jobs[i].path.absolute()), "name": jobs[i].rel, "key": jobs[i].key(ident)[:12]}
            for i in todo
        ]
        config_json = config.model_dump_json()
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4096))
        # A decode task holds up to row_bytes of windows and their pickle: reserving that memory also
        # keeps Ray Data from fusing this stage into the actors (it fuses stages with equal remote args),
        # so decoding runs in tasks of its own, ahead of inference, on whichever nodes have CPUs free.
        with warnings.catch_warnings():
            # Ray 2.5x deprecates passing max_retries & co. this way (removal announced for 2.64) and offers
            # no named parameter yet; without them a file that crashes its worker is retried forever.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(
                _decode_stage,
                batch_size=1,
                batch_format="pyarrow",
                fn_kwargs={"config_json": config_json, "row_bytes": row_bytes},
                num_cpus=sizes["decode_cpus"],
                memory=2 * row_bytes + (256 << 20),
                max_retries=RETRIES,
            )
            ds = ds.map_batches(
                _Infer,
                batch_size=1,
                batch_format="pyarrow",
                fn_constructor_args=(config_json,),
                compute=ray.data.ActorPoolStrategy(size=sizes["actors"]),
                num_cpus=sizes["actor_cpus"],
                num_gpus=sizes["actor_gpus"] or None,
                max_restarts=-1,
                max_task_retries=RETRIES,
            )
        remaining = set(todo)
        for row in ds.iter_rows():
            i = int(row["index"])
            if i not in remaining:
                continue
            remaining.discard(i)
            yield i, pickle.loads(row["records"]), _shown(json.loads(row["end"]), row["path"], str(jobs[i].path))
        for i in sorted(remaining):
            yield i, [], {"duration": None, "fatal": True, "partial": None, "errors": [f"{jobs[i].path}: {MISSING}"]}
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        for name, lg in loggers.items():
            lg.setLevel(levels[name])
        if started:
            ray.shutdown()


def _shown(end: dict[str, Any], opened: str, given: str) -> dict[str, Any]:
    """Messages name the file as the user gave it (workers open it by absolute path), as the local engine does."""
    if opened != given:
        end["errors"] = [m.replace(opened, given) for m in end.get("errors", [])]
        if end.get("partial"):
            end["partial"] = end["partial"].replace(opened, given)
    return end
