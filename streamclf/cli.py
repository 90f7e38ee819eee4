"""Command line: argument parsing only; the verbs' functions are in ``commands.py``.

Parsing and every check of the arguments and the config come before the first
import of torch or a model (seconds on a busy machine), so ``--help`` and a
usage or config error answer at once; this module imports only the standard
library at the top.

A flag that sets a config field is declared with ``_setting`` and names the
field by its config path (``window.fps``): its value goes into the config as
that path, and its help is the field's description in the schema (read only
when help is shown), so the flags and the config cannot drift apart (a test
checks every path against the schema).

Exit codes: 0 done; 1 a source, file or clip failed while running (the others
went on), or weights could not be had; 2 the command line or the config is
wrong (nothing was processed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import commands
from .catalog import FUSION_METHODS, TRAINABLE, methods_help
from .commands import SETTING


class _FromSchema(str):
    """A flag's help that is its config field's description, looked up when help is shown."""

    def __new__(cls, path: str, note: str = "") -> _FromSchema:
        made = super().__new__(cls, path)
        made.note = note
        return made

    note: str


class _Help(argparse.HelpFormatter):
    """Fills in the help of ``_setting`` flags from the schema (pydantic is imported for --help only then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if isinstance(text, _FromSchema):
            from .config import field_info

            described = (field_info(text).description or "").replace("%", "%%")
            return "; ".join(filter(None, [described, text.note])) + f" (config: {text})"
        return text


def _setting(parser: argparse.ArgumentParser, flag: str, path: str, note: str = "", **kw: Any) -> None:
    """``flag`` sets the config field ``path``; its help is the field's description (and ``note``) unless ``kw``
    gives one. Unset (None) leaves the config's value."""
    kw.setdefault("help", _FromSchema(path, note))
    if "action" not in kw:  # a flag with a value: named after the field, not after the dest
        kw.setdefault("metavar", path.rsplit(".", 1)[-1].upper())
    parser.add_argument(flag, dest=SETTING + path, **kw)


def _encoder_flags(parser: argparse.ArgumentParser) -> None:
    """The same encoder choice on every verb that runs the pipeline."""
    _setting(parser, "--video-encoder", "video.encoder", help="video encoder by name (see streamclf models)")
    _setting(parser, "--audio-encoder", "audio.encoder", help="audio encoder by name (see streamclf models)")
    _setting(parser, "--speech", "speech.enabled", action="store_const", const=True)
    _setting(
        parser,
        "--detector",
        "detector.enabled",
        action=argparse.BooleanOptionalAction,
        help="the person detector (category person, record field detector); default: on for live sources and "
        "alert rules on person (config: detector.enabled)",
    )


def _model_flags(parser: argparse.ArgumentParser, engine: str = "--engine") -> None:
    """Head, calibration, device and engine: what every verb that classifies may change."""
    _setting(parser, "--head", "fusion.head")
    _setting(parser, "--calibration", "fusion.calibration")
    _setting(parser, "--device", "device")
    _setting(parser, engine, "engine")


def _reuse_flag(parser: argparse.ArgumentParser, default: str) -> None:
    _setting(
        parser,
        "--reuse",
        "reuse.enabled",
        action=argparse.BooleanOptionalAction,
        help="unchanged frames reuse the last computed frame's embedding and detections, silent windows the "
        f"result of silence (reuse.*; docs/frame-reuse.md); default: {default}",
    )


class _Stderr(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"streamclf: {record.getMessage()}", file=sys.stderr, flush=True)  # today's stderr (tests swap it)


def _log_levels(args: argparse.Namespace) -> dict[str, int]:
    """Logger name -> level for this command. ``run`` with the dashboard: it shows what loads and the sources'
    states, so only warnings and errors come as lines (above it), and the sinks' down and back-up lines (it does
    not show sinks); without it, what loads and each state change, or (--quiet) only the errors and a sink
    that is down."""
    if args.verb != "run":
        return {"streamclf": logging.INFO}
    if not args.no_dashboard:
        return {
            "streamclf": logging.WARNING,
            "streamclf.pipeline.status": logging.CRITICAL + 1,
            "streamclf.sinks": logging.INFO,
        }
    if args.quiet:
        return {"streamclf": logging.ERROR, "streamclf.sinks": logging.WARNING}
    return {"streamclf": logging.INFO}


@contextmanager
def _log_to_stderr(levels: dict[str, int]) -> Iterator[None]:
    """The one place the ``streamclf`` logger is configured: one plain line per message on stderr, at ``levels``;
    put back as it was afterwards (``main`` called in-process leaves the embedding program's logging alone)."""
    root = logging.getLogger("streamclf")
    saved = [(logger, logger.level) for logger in map(logging.getLogger, levels)]
    saved_root = root.handlers[:], root.propagate
    root.handlers = [h for h in root.handlers if not isinstance(h, _Stderr)] + [_Stderr()]
    root.propagate = False  # the root logger's handlers (if any) would print it twice
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        root.handlers, root.propagate = saved_root
        for logger, level in saved:
            logger.setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    """Every verb and flag; the docs test parses each command the README and docs/ show with it."""
    parser = argparse.ArgumentParser(
        prog="streamclf", description="Real-time audio-visual classification.", formatter_class=_Help
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="classify files, cameras or streams live", formatter_class=_Help)
    run.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="file, URL, /dev/videoN or camera index; NAME=SOURCE names it (default: built-in sample)",
    )
    run.add_argument("--out", help="append JSON-lines records here (- for stdout)")
    run.add_argument("--config", help="YAML config (see configs/default.yaml)")
    run.add_argument(
        "--no-dashboard",
        action="store_true",
        help="no live terminal view: what loads and each source's state changes as lines on stderr",
    )
    run.add_argument("--quiet", action="store_true", help="with --no-dashboard: only the errors, no status lines")
    _setting(run, "--fps", "window.fps", type=float)
    _setting(run, "--window", "window.length", type=float)
    _setting(run, "--hop", "window.hop", type=float)
    _setting(run, "--top-k", "fusion.top_k", type=int)
    _setting(run, "--smoothing", "fusion.smoothing", type=float)
    _model_flags(run)
    _setting(run, "--realtime", "sources.realtime", action="store_const", const=True)
    run.add_argument(
        "--alert",
        action="append",
        metavar="LABEL[:SCORE]",
        help="raise alerts for this fused label above SCORE (default 0.5); LABEL:audio=S or "
        "LABEL:0.4,audio=S,video=S also fires on one modality alone (repeatable; rules in the "
        "config have more settings)",
    )
    _setting(run, "--events-dir", "alerts.events_dir")
    _setting(run, "--output-dir", "output_dir", note="given here, it may be anywhere")
    _setting(run, "--sqlite", "sinks.sqlite.path", metavar="PATH", note="also store alerts and status there")
    _setting(run, "--webhook", "sinks.webhook.url", metavar="URL")
    _setting(run, "--webhook-secret-env", "sinks.webhook.secret_env", metavar="VAR")
    _setting(run, "--webhook-spool", "sinks.webhook.spool", metavar="PATH")
    # Two fields in one flag (sinks.mqtt.host and .port): read by hand in _run.
    run.add_argument("--mqtt", metavar="HOST[:PORT]", help="also publish to this MQTT broker")
    run.add_argument("--timings", action="store_true", help="print per-stage p50/p95 timings at the end")
    _encoder_flags(run)
    _reuse_flag(run, "on for live sources (cameras, streams, --realtime), off for files")
    run.set_defaults(func=commands.run)

    lb = verbs.add_parser(
        "label", help="label files and folders of media into timelines, segments and subtitles", formatter_class=_Help
    )
    lb.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (recursive) or globs")
    lb.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    lb.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="only file names matching this (repeatable; default: known media extensions)",
    )
    lb.add_argument("--exclude", action="append", metavar="PATTERN", help="skip file names matching this (repeatable)")
    lb.add_argument("--force", action="store_true", help="relabel files already done")
    lb.add_argument(
        "--workers",
        type=int,
        help="decode processes (default: cores - 1, at most 4); with --engine "
        "ray and no --ray-address, the CPUs of the local Ray it starts (default: all)",
    )
    lb.add_argument("--plots", action="store_true", help="also a PNG timeline per file")
    lb.add_argument("--threshold", type=float, default=0.3, help="minimum fused score for a segment")
    lb.add_argument("--config", help="YAML config (window, encoders, fusion)")
    _model_flags(lb, engine="--encoder-engine")  # --engine is local or ray here
    lb.add_argument("--no-progress", action="store_true", help="no progress bar")
    _encoder_flags(lb)
    _reuse_flag(lb, "off (every frame is read)")
    lb.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: decode and infer on a Ray cluster (pip install 'streamclf[ray]')",
    )
    lb.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, ray://head:10001); default: a local Ray")
    lb.set_defaults(func=commands.label)

    ev = verbs.add_parser("events", help="list alerts (or status/label records) from the SQLite event store")
    ev.add_argument("--db", help="event store (default: sinks.sqlite.path of --config, else streamclf-events.db)")
    ev.add_argument("--config", help="YAML config whose sinks.sqlite.path to read")
    ev.add_argument("--source", help="only this source")
    ev.add_argument("--since", help="ISO date/time or an age like 30m, 2h, 7d")
    ev.add_argument("--label", help="only this label")
    ev.add_argument("--type", default="alert", choices=["alert", "status", "labels"], help="which records")
    ev.add_argument("--limit", type=int, help="at most this many (newest last)")
    ev.add_argument("--json", action="store_true", help="the whole records as a JSON array instead of a table")
    ev.set_defaults(func=commands.events)

    tr = verbs.add_parser("train", help="train a fusion head from labeled clips (or 'avdigits')")
    tr.add_argument("data", help="folder with a sub-folder per class, a CSV of path,label, or 'avdigits'")
    tr.add_argument(
        "--fusion",
        default="gated",
        choices=TRAINABLE,
        metavar="METHOD",
        help=f"fusion method (default: gated): {methods_help(TRAINABLE)}",
    )
    tr.add_argument("--out", required=True, help="head folder to write (card.yaml + head.safetensors)")
    tr.add_argument("--config", help="YAML config: window, encoders and pooling to train with")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, help="training epochs for neural heads")
    tr.add_argument("--hidden", type=int, help="hidden width for neural heads")
    tr.add_argument("--hold-out", default="yweweler", help="avdigits: speaker kept out of training")
    tr.add_argument(
        "--group",
        nargs="?",
        const="",
        metavar="COLUMN",
        help="validate on whole held-out groups (speakers, cameras, days): a CSV column, or alone for "
        "class/group/clip folders",
    )
    tr.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train on the clips' own windows only (no composed stream, gain or blank-modality copies)",
    )
    tr.add_argument(
        "--no-audio-features",
        dest="audio_features",
        action="store_false",
        help="the pooled audio embedding alone, without the time-structured audio features "
        "(streamclf.audio_features) that train adds by default",
    )
    tr.set_defaults(func=commands.train)

    md = verbs.add_parser("models", help="list encoders and heads: labels, input, size, license, weights here or not")
    md.add_argument("--bench", action="store_true", help="also measure each available encoder's speed on this machine")
    md.add_argument("--json", action="store_true", help="JSON instead of a table")
    md.add_argument(
        "--wide",
        action="store_true",
        help="every column (kind, input, license terms); the default fits a 100-column terminal",
    )
    md.add_argument("--device", help="device for --bench: auto, cpu, cuda, cuda:N")
    md.add_argument(
        "--engine", default="auto", help="engine for --bench: auto, torch, onnxruntime, openvino (docs/engines.md)"
    )
    md.set_defaults(func=commands.models)

    evl = verbs.add_parser(
        "eval", help="fused vs audio-only vs video-only accuracy on labeled clips", formatter_class=_Help
    )
    evl.add_argument("data", help="folder with a sub-folder per category, or a CSV of path,label (as for train)")
    _setting(evl, "--head", "fusion.head")
    _setting(evl, "--calibration", "fusion.calibration")
    evl.add_argument("--config", help="YAML config (window, encoders, fusion, smoothing) to run with")
    evl.add_argument(
        "--compose",
        action="store_true",
        help="run one stream of the clips back to back with gaps "
        "of silence and grey frames, as in live use (default: clip by clip)",
    )
    evl.add_argument("--gap", type=float, help="with --compose: seconds of gap before each clip (default 3)")
    evl.add_argument(
        "--threshold",
        type=float,
        help="score a gap window's label must reach to count as a false "
        "alarm (default: the default alert min_score, 0.5)",
    )
    evl.add_argument("--json", metavar="FILE", help="also write every figure (and each clip's labels) here")
    evl.set_defaults(func=commands.evaluate)

    cal = verbs.add_parser(
        "calibrate", help="fit the zero-shot fusion's calibration on your own labeled clips", formatter_class=_Help
    )
    cal.add_argument(
        "data",
        help="folder with a sub-folder per category, or a CSV of path,label (as for train); "
        "labels are category-map names",
    )
    cal.add_argument("--out", required=True, help="calibration file to write (YAML); use it with --calibration")
    cal.add_argument("--config", help="YAML config (its encoders are the ones calibrated)")
    cal.add_argument("--note", help="a line for the card: where the clips come from")
    _encoder_flags(cal)
    cal.set_defaults(func=commands.calibrate)

    cmp = verbs.add_parser("compare", help="compare every fusion method on AV-digits")
    cmp.add_argument(
        "--methods",
        nargs="+",
        choices=FUSION_METHODS,
        metavar="METHOD",
        help=f"subset of methods (default: all): {methods_help()}",
    )
    cmp.add_argument("--seeds", type=int, default=1, help="training seeds per fold")
    cmp.add_argument("--folds", type=int, help="use only the first N speaker folds")
    cmp.add_argument("--epochs", type=int, help="training epochs for neural heads")
    cmp.add_argument("--workers", type=int, help="processes training folds side by side (default: one per core)")
    cmp.add_argument("--data", help="shared data folder (default: ../shared/data or STREAMCLF_SHARED_DATA)")
    cmp.add_argument("--out", default="benchmarks/results", help="folder for fusion_avdigits.{md,json,png}")
    cmp.set_defaults(func=commands.compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["streamclf", *argv])
    try:
        with _log_to_stderr(_log_levels(args)):
            return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # A verb reports what fails while running (a source, a file) in its return value; what
        # escapes as these is the input as given (config, paths, labels, names): a usage error.
        print(f"streamclf: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _weights_unavailable(e):
            raise
        print(f"streamclf: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _weights_unavailable(e: BaseException) -> bool:
    """Whether ``e`` is encoders.weights.WeightsUnavailable; only raised once that module (and torch) loaded."""
    weights: Any = sys.modules.get("streamclf.encoders.weights")
    return weights is not None and isinstance(e, weights.WeightsUnavailable)


if __name__ == "__main__":
    sys.exit(main())
