"""Label archives: files, folders and globs to per-file timelines, segments and subtitles.

Every file goes through the same models and ``Recorder`` as a live run, one
file at a time in fixed-size chunks of windows, so the same file, head and
config give the same records whatever else the job holds. Decoding runs
ahead in worker processes; inference stays in this one (one copy of the
models). Outputs are written to a scratch folder and renamed into place,
the segments file last: it marks the file done, keyed by path, size, mtime
and the model/config identity, so a killed job resumes where it stopped.
A file whose decoding stops before its end is labeled as far as it goes and
reported "partial", never "ok".
"""
from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__
from .config import Config, SourcesConfig, load_config
from .decode_worker import DecodeProcess
from .sources import Decoder, SourceSpec
from .stages import Feed
from .types import SourceEnd, SourceError, SourceInfo, Window
from .windows import Windower, WindowSpec

MEDIA_EXTENSIONS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".m4v", ".flv",
                    ".wmv", ".3gp", ".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}
CHUNK = 16  # windows per inference batch: fixed, so results never depend on timing
SCRATCH = ".partial"  # unfinished outputs; emptied at the start of every run
DROP = ("id", "time", "latency_ms")  # live-run fields; batch records are deterministic without them
# Torch threads for label's inference, in every engine and on every machine: CPU convolutions sum in an
# order that depends on the thread count (1 vs 2 threads moved a score from 0.1699 to 0.17), so a count
# taken from the machine or the engine (Ray gives an actor one thread per CPU) would change the bytes.
THREADS = 2
SHORT = 1.0  # seconds: decoded media ending this much (or 2%) before the declared duration is a cut file


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


@dataclass
class FileResult:
    """One row of the run summary."""

    path: str
    rel: str
    status: str  # ok, partial (labeled up to where decoding stopped; ``error`` says why), error
    duration: float | None = None
    windows: int = 0
    top: list[dict[str, Any]] = field(default_factory=list)  # [{label, seconds}], longest first
    error: str | None = None
    warnings: int = 0
    resumed: bool = False


def find_inputs(paths: list[str], include: list[str] | None = None,
                exclude: list[str] | None = None) -> list[Job]:
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


def identity(config: Config) -> str:
    """What makes labels differ besides the file: config, encoder weights and the head."""
    from .encoders import MODELS

    parts = [config.model_dump_json(exclude={"sinks", "alerts", "sources", "device", "queue_size",
                                             "batch_windows", "batch_timeout", "output_dir"})]
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
        return {"duration": self.info.duration if self.info else None, "errors": list(self.errors),
                "fatal": self.fatal, "partial": self.partial()}


def file_windows(path: str | Path, name: str, config: Config, chunk: int = CHUNK
                 ) -> Iterator[tuple[list[Window], Decoded]]:
    """Decode one file into chunks of windows: yields (windows, what decoding has told so far)."""
    w = config.window
    feed = Feed(256, droppable=lambda item: False)
    decoder = Decoder(SourceSpec(url=str(path), name=name), feed, fps=w.fps, max_side=w.max_side, short_side=w.short_side,
                      settings=config.sources.model_copy(update={"realtime": False}))
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
        for windows, state in file_windows(path, name, config):
            if windows:
                yield windows
    except Exception as e:  # one bad file never stops the batch
        state.errors.append(f"{path}: {e}")
        state.fatal = True
    end.update(state.end())


@contextmanager
def _inference_threads() -> Iterator[None]:
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


def label_windows(models: Any, recorder: Any, windows: list[Window], key: str | None = None,
                  first: int = 0) -> list[dict[str, Any]]:
    """A chunk of one file's windows to its records: the one record builder of every engine and of
    ``iter_records``, so the same chunks give the same bytes wherever they run. ``key`` adds ids
    (``{key}-{n:06d}``, counting from ``first``)."""
    with _inference_threads():
        scored = models.process(windows)
    records = []
    for n, s in enumerate(scored, first):
        record = {k: v for k, v in recorder(s).to_dict().items() if k not in DROP}
        if key is not None:
            record["id"] = f"{key}-{n:06d}"
        records.append(record)
    return records


class _Writer:
    """Atomic per-file outputs: scratch folder first, then renamed into place, segments last."""

    def __init__(self, out: Path, plots: bool, threshold: float, hop: float) -> None:
        self.out, self.plots, self.threshold, self.hop = out, plots, threshold, hop
        self.scratch = out / SCRATCH
        shutil.rmtree(self.scratch, ignore_errors=True)  # whatever a killed run left half-written
        self.scratch.mkdir(parents=True, exist_ok=True)

    def done(self, job: Job, key: str) -> dict[str, Any] | None:
        path = self.out / (job.rel + ".segments.json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != key or data.get("threshold") != self.threshold:
            return None
        if self.plots and not (self.out / (job.rel + ".png")).exists():
            return None  # asked for plots this time
        return data

    def write(self, job: Job, key: str, records: list[dict[str, Any]], end: dict[str, Any]) -> dict[str, Any]:
        duration = end["duration"]
        segments = merge_segments(records, self.threshold, self.hop, duration)
        summary = {"source": job.rel, "path": str(job.path), "key": key, "duration": duration,
                   "windows": len(records), "threshold": self.threshold, "segments": segments,
                   "warnings": end["errors"], "status": "partial" if end["partial"] else "ok",
                   "partial": end["partial"]}
        outputs = {".jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                   ".vtt": webvtt(segments)}
        if self.plots:
            outputs[".png"] = None
        outputs[".segments.json"] = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"  # last: marks done
        for ext, text in outputs.items():
            final = self.out / (job.rel + ext)
            tmp = self.scratch / (hashlib.sha1(job.rel.encode()).hexdigest()[:16] + ext)
            if text is None:
                plot_timeline(records, tmp, title=job.rel)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        return summary


def merge_segments(records: list[dict[str, Any]], threshold: float, hop: float,
                   duration: float | None = None) -> list[dict[str, Any]]:
    """Consecutive windows whose top fused label is the same (and >= threshold) become one segment.

    A window stands for its centre +- hop/2, so segments tile the timeline
    without the overlap of the windows themselves; the first and last
    windows also cover the file's start and end.
    """
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for i, r in enumerate(records):
        top = r["labels"][0] if r["labels"] else None
        centre = (r["t_start"] + r["t_end"]) / 2
        label = top["label"] if top and top["score"] >= threshold else None
        start = r["t_start"] if i == 0 else max(0.0, centre - hop / 2)
        end = r["t_end"] if i == len(records) - 1 else centre + hop / 2
        if duration:
            end = min(end, duration)
        if cur is not None and (label != cur["label"] or start > cur["end"] + 1e-6):
            out.append(cur)
            cur = None
        if label is None:
            continue
        if cur is None:
            cur = {"label": label, "start": start, "end": end, "scores": []}
        cur["end"] = end
        cur["scores"].append(top["score"])
    if cur is not None:
        out.append(cur)
    return [{"label": s["label"], "start": round(s["start"], 3), "end": round(s["end"], 3),
             "peak": round(max(s["scores"]), 4), "mean": round(sum(s["scores"]) / len(s["scores"]), 4)}
            for s in out]


def _vtt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(segments: list[dict[str, Any]]) -> str:
    """Segments as WebVTT cues, so the labels show as subtitles in any player."""
    cues = [f"{i}\n{_vtt_time(s['start'])} --> {_vtt_time(s['end'])}\n{s['label']} ({s['peak']:.2f})\n"
            for i, s in enumerate(segments, 1) if s["end"] > s["start"]]
    return "WEBVTT\n\n" + "\n".join(cues)


def plot_timeline(records: list[dict[str, Any]], path: Path, title: str = "", n: int = 5) -> None:
    """Per-class scores over time for audio, video and fused: one panel each, the n strongest classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [(r["t_start"] + r["t_end"]) / 2 for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for ax, key in zip(axes, ("audio", "video", "labels")):
        series: dict[str, list[float]] = {}
        for i, r in enumerate(records):
            for e in r.get(key) or []:
                series.setdefault(e["label"], [0.0] * len(records))[i] = e["score"]
        for label in sorted(series, key=lambda k: -max(series[k]))[:n]:
            ax.plot(t, series[label], label=label[:30])
        ax.set_ylabel("fused" if key == "labels" else key)
        ax.set_ylim(0, 1)
        if series:
            ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def _top(segments: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    total: dict[str, float] = {}
    for s in segments:
        total[s["label"]] = total.get(s["label"], 0.0) + s["end"] - s["start"]
    return [{"label": k, "seconds": round(v, 2)} for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:n]]


def _probe_duration(path: Path) -> float | None:
    import av

    if not path.is_file():  # a named pipe would block here, and give its data to the wrong reader
        return None
    spec = SourceSpec(url=str(path), name=path.name)
    try:
        with av.open(spec.target, options=spec.options(SourcesConfig()), timeout=10.0, metadata_errors="replace") as c:
            return c.duration / av.time_base if c.duration else None
    except Exception:  # the decoder will say what is wrong with it
        return None


def default_workers() -> int:
    """Decode processes: leave a core for inference."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _Progress:
    """Files done, hours of media, media-seconds per wall-second and ETA (rich; plain lines off a terminal)."""

    def __init__(self, total_files: int, total_media: float, show: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.started = time.monotonic()
        self.media = 0.0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]}"),
                                 TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
                                 console=self.console, disable=not show or not self.console.is_terminal)
        self.task = self.progress.add_task("labeling", total=max(total_media, 1e-6),
                                           files=f"0/{total_files} files", speed="")
        self.total_files, self.files = total_files, 0

    def __enter__(self) -> "_Progress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def advance(self, media_seconds: float) -> None:
        self.media += media_seconds
        rate = self.media / max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, advance=media_seconds,
                             speed=f"{self.media / 3600:.2f} h media, {rate:.1f}x")

    def file_done(self) -> None:
        self.files += 1
        self.progress.update(self.task, files=f"{self.files}/{self.total_files} files")


@contextmanager
def _decode_processes(n: int) -> Iterator[list[DecodeProcess]]:
    """``n`` started decode processes, all stopped at the end whatever happened."""
    started = [DecodeProcess.start() for _ in range(n)]
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def label_files(paths: list[str], out: str | Path, config: Config | None = None, *,
                include: list[str] | None = None, exclude: list[str] | None = None, force: bool = False,
                workers: int | None = None, plots: bool = False, threshold: float = 0.3,
                progress: bool = True, on_error: Callable[[str], None] | None = None,
                engine: str = "local", ray_address: str | None = None) -> list[FileResult]:
    """Label every media file under ``paths`` into ``out``; returns one result per file.

    Resumes by default (files already labeled with the same models and
    config are skipped); ``force`` relabels. A bad file gives one line to
    ``on_error`` and an ``error`` row; it never stops the others. A file
    whose decoding stops before its end (cut, damaged) keeps the labels of
    what decoded, gives one line to ``on_error`` and a ``partial`` row.
    ``engine="ray"`` decodes and infers on a Ray cluster (``ray_address``,
    or a local Ray) and writes the same outputs here.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose local or ray")
    if engine == "ray":
        from .batch_ray import require_ray

        require_ray()  # before the models load: a missing Ray is said at once
    config = config or load_config()
    out = Path(out)
    jobs = find_inputs(paths, include, exclude)
    n = min(workers or default_workers(), len(jobs)) if engine == "local" else 0
    # The decode processes start first, so that their start-up overlaps with loading torch here; the
    # inference threads are set once for the run, not switched per chunk.
    with _decode_processes(n) as spare, _inference_threads():
        from .pipeline import Models

        models = Models(config)
        config = models.config
        ident = identity(config)
        writer = _Writer(out, plots, threshold, config.window.hop)
        on_error = on_error or (lambda msg: print(f"streamclf: error: {msg}", file=sys.stderr, flush=True))
        results: dict[int, FileResult] = {}
        todo = []
        for i, job in enumerate(jobs):
            done = None if force else writer.done(job, job.key(ident))
            if done is not None:
                results[i] = FileResult(str(job.path), job.rel, done.get("status", "ok"), done.get("duration"),
                                        done.get("windows", 0), _top(done["segments"]), done.get("partial"),
                                        len(done.get("warnings", [])), resumed=True)
            else:
                todo.append(i)
        started = time.time()
        durations = {i: _probe_duration(jobs[i].path) for i in todo}
        with _Progress(len(todo), sum(d or 0.0 for d in durations.values()), progress) as bar:
            if engine == "ray":
                from .batch_ray import run_ray

                stream = run_ray(jobs, todo, config, ident, address=ray_address, num_cpus=workers)
            else:
                stream = _run_local(jobs, todo, models, config, spare, ident)
            for i, records, end in stream:
                job = jobs[i]
                if end["fatal"] or not records:
                    message = (end["errors"][-1] if end["fatal"] and end["errors"]
                               else f"{job.path}: no windows: too little decodable media")
                    on_error(message)
                    results[i] = FileResult(str(job.path), job.rel, "error", end["duration"], error=message)
                else:
                    summary = writer.write(job, job.key(ident), records, end)
                    if end["partial"]:
                        on_error(end["partial"])
                    results[i] = FileResult(str(job.path), job.rel, summary["status"], end["duration"], len(records),
                                            _top(summary["segments"]), end["partial"], len(end["errors"]))
                bar.advance(durations.get(i) or end["duration"] or 0.0)
                bar.file_done()
        ordered = [results[i] for i in sorted(results)]
        _write_summary(out, ordered, {"started": started, "finished": time.time(), "inputs": list(paths),
                                      "identity": ident, "config": json.loads(config.model_dump_json()),
                                      "engine": engine, "threshold": threshold})
        return ordered


def _run_local(jobs: list[Job], todo: list[int], models: Any, config: Config, decoders: list[DecodeProcess],
               ident: str) -> Iterator[tuple[int, list[dict[str, Any]], dict[str, Any]]]:
    """Decode in the started ``decoders``, infer here; yields (job index, records, end info) per file.

    The watchdog (``sources.file_timeout``) counts only the time this process spent waiting for a
    decoder: time spent on inference, its own or another file's, while the decoder waits to hand over
    windows is not the decoder's fault, however slow the machine.
    """
    from .pipeline import Recorder

    if not todo:
        return
    config_json = config.model_dump_json()
    queued = list(todo)
    recorder = Recorder(models, config)
    records: dict[int, list[dict[str, Any]]] = {i: [] for i in todo}
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
        recorder.reset(jobs[index].rel)
        models.forget(jobs[index].rel)
        return records.pop(index)

    def failed(index: int, why: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        finished(index)
        return index, [], {"duration": None, "fatal": True, "partial": None, "errors": [f"{jobs[index].path}: {why}"]}

    try:
        for d in decoders[:len(todo)]:
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
                            records[index] += label_windows(models, recorder, payload, jobs[index].key(ident)[:12],
                                                            len(records[index]))
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


def iter_records(path: str | Path, config: Config | None = None, models: Any = None) -> Iterator[dict[str, Any]]:
    """Window records of one file, in order, as they are computed (clip mode; no files written)."""
    from .pipeline import Models, Recorder

    models = models or Models(config or load_config())
    config = models.config
    name = Path(path).name
    recorder = Recorder(models, config)
    state = None
    for windows, state in file_windows(path, name, config):
        if windows:
            yield from label_windows(models, recorder, windows)
    models.forget(name)
    if state is not None and state.fatal and state.errors:
        raise ValueError(state.errors[-1])


def _write_summary(out: Path, rows: list[FileResult], manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / SCRATCH
    tmp.mkdir(exist_ok=True)
    with open(tmp / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "output", "duration", "status", "windows", "top_labels", "warnings", "resumed", "error"])
        for r in rows:
            top = "; ".join(f"{t['label']} {t['seconds']:.1f}s" for t in r.top)
            w.writerow([r.path, r.rel, "" if r.duration is None else round(r.duration, 3), r.status, r.windows,
                        top, r.warnings, r.resumed, r.error or ""])
    (tmp / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "partial", "error")}
    manifest = {**manifest, "files": len(rows), **counts, "resumed": sum(r.resumed for r in rows),
                "streamclf": __version__}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in ("summary.csv", "summary.json", "manifest.json"):
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
