"""Command line: argument parsing only, over the Python API.

Parsing and every check of the arguments and the config come before the first
import of torch or a model (seconds on a busy machine), so ``--help`` and a
usage or config error answer at once; this module imports only the standard
library at the top.

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
from typing import TYPE_CHECKING, Any

from .catalog import FUSION_METHODS, TRAINABLE, methods_help

if TYPE_CHECKING:
    from .config import AlertRule


CALIBRATION_HELP = "zero-shot calibration file (streamclf calibrate; default: the built-in one; none: raw scores)"


ENGINE_HELP = "what runs the encoders: auto (default), torch, onnxruntime, openvino (docs/engines.md)"


def _encoder_flags(parser: argparse.ArgumentParser) -> None:
    """The same encoder choice on every verb that runs the pipeline."""
    parser.add_argument(
        "--video-encoder", help="video encoder by name (see streamclf models; default efficientnet_lite0)"
    )
    parser.add_argument("--audio-encoder", help="audio encoder by name (see streamclf models; default yamnet)")
    parser.add_argument("--speech", action="store_true", help="add each window's speech probability (silero-vad)")
    parser.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        help="the person detector (category "
        "person, record field detector); default: on for live sources and alert rules on person",
    )


def _reuse_flag(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        help="unchanged frames reuse the last "
        "computed frame's embedding and detections, silent windows the result of silence "
        f"(reuse.*; docs/frame-reuse.md); default: {default}",
    )


def _encoders(args: argparse.Namespace) -> dict[str, object]:
    return {
        "video.encoder": args.video_encoder,
        "audio.encoder": args.audio_encoder,
        "speech.enabled": args.speech or None,
        "detector.enabled": args.detector,
    }


def _run(args: argparse.Namespace) -> int:
    from .catalog import check_alert_labels, fused_labels
    from .config import load_config

    overrides = {
        k: v
        for k, v in {
            "window.fps": args.fps,
            "window.length": args.window,
            "window.hop": args.hop,
            "device": args.device,
            "engine": args.engine,
            "fusion.top_k": args.top_k,
            "fusion.smoothing": args.smoothing,
            "fusion.head": args.head,
            "fusion.calibration": args.calibration,
            "sources.realtime": args.realtime or None,
            **_encoders(args),
            "reuse.enabled": args.reuse,
            "sinks.webhook.url": args.webhook,
            "sinks.webhook.secret_env": args.webhook_secret_env,
            "sinks.webhook.spool": args.webhook_spool,
            "sinks.sqlite.path": args.sqlite,
            "alerts.events_dir": args.events_dir,
            "output_dir": args.output_dir,
        }.items()
        if v is not None
    }
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":") if ":" in args.mqtt else (args.mqtt, "", "")
        overrides["sinks.mqtt.host"] = host
        if port:
            overrides["sinks.mqtt.port"] = port
    config = load_config(args.config, **overrides)
    rules = [_alert_rule(text) for text in args.alert or []]
    if rules:
        config.alerts = config.alerts.model_copy(update={"rules": [*config.alerts.rules, *rules]})
    names = fused_labels(config)
    if names is not None:
        check_alert_labels((r.label for r in config.alerts.rules), names, args.config or "config")
    from .sources import SourceSpec

    for source in args.sources:
        SourceSpec.parse(source)  # an unsupported scheme is a usage error: say so before loading models
    from .pipeline import run

    states = run(
        args.sources,
        out=args.out,
        config=config,
        dashboard=not args.no_dashboard,
        report=_progress if args.timings else None,
    )
    failed = False
    for st in states.values():
        if st.fatal:
            failed = True
            if not args.no_dashboard:  # without it, the error line came when it happened
                print(f"streamclf: error: {st.errors[-1]}", file=sys.stderr)
    return 1 if failed else 0


def _alert_rule(text: str) -> AlertRule:
    """``dog``, ``dog:0.4`` (fused), ``dog:audio=0.5``, ``dog:0.4,audio=0.5,video=0.6``: any condition counts."""
    from .config import AlertRule, ConfigError

    label, _, conditions = text.partition(":")
    given: dict[str, float] = {}
    try:
        for part in filter(None, conditions.split(",")):
            key, eq, value = part.rpartition("=") if "=" in part else ("fused", "=", part)
            given[{"fused": "min_score"}.get(key.strip(), key.strip())] = float(value)
        if set(given) - {"min_score", "audio", "video"}:
            raise ValueError
        return AlertRule(label=label, **given)
    except ValueError:
        raise ConfigError(
            f"--alert {text}: expected LABEL, LABEL:SCORE or LABEL:audio=SCORE,video=SCORE with scores in [0, 1]"
        ) from None


def _label(args: argparse.Namespace) -> int:
    from .config import load_config

    if args.ray_address and args.engine != "ray":
        print("streamclf: error: --ray-address needs --engine ray", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in {
            "fusion.head": args.head,
            "fusion.calibration": args.calibration,
            "device": args.device,
            "reuse.enabled": args.reuse,
            "engine": args.encoder_engine,
            **_encoders(args),
        }.items()
        if v is not None
    }
    config = load_config(args.config, **overrides)
    from .labeling import label_files
    from .labeling.ray import RayMissing

    try:
        rows = label_files(
            args.paths,
            args.out,
            config,
            include=args.include,
            exclude=args.exclude,
            force=args.force,
            workers=args.workers,
            plots=args.plots,
            threshold=args.threshold,
            progress=not args.no_progress,
            engine=args.engine,
            ray_address=args.ray_address,
        )
    except RayMissing as e:
        print(f"streamclf: error: {e}", file=sys.stderr)
        return 2
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "partial", "error")}
    resumed = sum(r.resumed for r in rows)
    print(
        f"labeled {len(rows) - resumed - counts['error']} file(s) ({counts['partial']} only partly: cut or damaged), "
        f"{resumed} already done, {counts['error']} failed; summary in {args.out}/summary.csv",
        file=sys.stderr,
    )
    return 0 if counts["ok"] == len(rows) else 1


def _events(args: argparse.Namespace) -> int:
    from .config import SqliteConfig, load_config
    from .sinks.sqlite import format_events, query_events

    db = args.db
    if db is None and args.config:
        store = load_config(args.config).sinks.sqlite
        db = store.path if store is not None else None
    db = db or SqliteConfig().path
    rows = query_events(db, source=args.source, since=args.since, label=args.label, kind=args.type, limit=args.limit)
    if args.json:
        import json

        print(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        print(format_events(rows))
    return 0


def _models(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from .zoo import as_dicts, bench_all, list_models, render

    rows = list_models()
    if args.bench:
        bench_all(rows, args.device or "auto", progress=_progress, engine=args.engine)
    if args.json:
        print(json.dumps(as_dicts(rows), indent=1))
    else:
        console = Console()
        if not console.is_terminal:  # a pipe or file: wide enough that rows stay readable
            console = Console(width=220)
        console.print(render(rows, wide=args.wide))
        if args.bench:
            from .zoo import int8_note

            console.print(int8_note())
    return 0


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


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config) if args.data != "avdigits" else None
    from .audio_features import AUDIO_SHAPE
    from .train import report, train, train_avdigits

    hyper = {k: v for k, v in {"epochs": args.epochs, "hidden": args.hidden}.items() if v is not None}
    if config is None:
        card = train_avdigits(args.fusion, args.out, hold_out=args.hold_out, seed=args.seed, **hyper)
    else:
        card = train(
            args.data,
            args.fusion,
            args.out,
            config,
            seed=args.seed,
            progress=_progress,
            group=args.group,
            augment=args.augment,
            audio_features=AUDIO_SHAPE if args.audio_features else None,
            **hyper,
        )
    print(f"saved {args.fusion} head to {args.out}\n{report(card)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .config import load_config

    if args.gap is not None and not args.compose:
        raise ValueError("--gap needs --compose (clip by clip there are no gaps)")
    config = load_config(
        args.config,
        **{k: v for k, v in {"fusion.head": args.head, "fusion.calibration": args.calibration}.items() if v},
    )
    from .evaluate import DEFAULT_GAP, DEFAULT_THRESHOLD, evaluate, render, summary_lines, write_json

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    result = evaluate(
        args.data,
        config,
        compose=args.compose,
        gap=DEFAULT_GAP if args.gap is None else args.gap,
        threshold=threshold,
        progress=_progress,
    )
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(render(result))
    print("\n".join(summary_lines(result)))
    if args.json:
        print(f"wrote {write_json(result, args.json)}", file=sys.stderr)
    return 1 if result["failed"] else 0


def _calibrate(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config, **{k: v for k, v in _encoders(args).items() if v is not None})
    from .calibrate import calibrate, report

    cal = calibrate(args.data, args.out, config, note=args.note or "", progress=_progress)
    print(f"wrote {args.out}\n{report(cal)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .avdigits import load_avdigits
    from .compare import compare, table, write

    data = load_avdigits(Path(args.data) if args.data else None)
    hyper = {"epochs": args.epochs} if args.epochs else {}
    result = compare(
        data, args.methods, seeds=args.seeds, folds=args.folds, hyper=hyper, workers=args.workers, progress=_progress
    )
    paths = write(result, Path(args.out), args.command_line)
    print(table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every verb and flag; the docs test parses each command the README and docs/ show with it."""
    parser = argparse.ArgumentParser(prog="streamclf", description="Real-time audio-visual classification.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="classify files, cameras or streams live")
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
    run.add_argument("--fps", type=float, help="video frames sampled per second")
    run.add_argument("--window", type=float, help="window length, seconds")
    run.add_argument("--hop", type=float, help="hop between windows, seconds")
    run.add_argument("--top-k", type=int, help="labels per record")
    run.add_argument("--smoothing", type=float, help="EMA alpha across windows (1 = off)")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--engine", help=ENGINE_HELP)
    run.add_argument("--head", help="trained head folder (streamclf train) instead of the category map")
    run.add_argument("--calibration", help=CALIBRATION_HELP)
    run.add_argument(
        "--realtime",
        action="store_true",
        help="pace files at real time, like a live feed (windows are dropped when behind)",
    )
    run.add_argument(
        "--alert",
        action="append",
        metavar="LABEL[:SCORE]",
        help="raise alerts for this fused label above SCORE (default 0.5); LABEL:audio=S or "
        "LABEL:0.4,audio=S,video=S also fires on one modality alone (repeatable; rules in the "
        "config have more settings)",
    )
    run.add_argument("--events-dir", help="where alert snapshots and clips go (default: events)")
    run.add_argument(
        "--output-dir",
        help="folder the config's output paths are relative to and may not leave (default: the current folder)",
    )
    run.add_argument("--sqlite", metavar="PATH", help="also store alerts and status in this SQLite event store")
    run.add_argument("--webhook", metavar="URL", help="also POST every record to this URL (spooled, retried)")
    run.add_argument(
        "--webhook-secret-env",
        metavar="VAR",
        help="sign webhook bodies (HMAC-SHA256) with the key in "
        "this environment variable (the key itself never goes on the command line)",
    )
    run.add_argument(
        "--webhook-spool", metavar="PATH", help="webhook spool file (default: one per URL in the user's state folder)"
    )
    run.add_argument("--mqtt", metavar="HOST[:PORT]", help="also publish to this MQTT broker")
    run.add_argument("--timings", action="store_true", help="print per-stage p50/p95 timings at the end")
    _encoder_flags(run)
    _reuse_flag(run, "on for live sources (cameras, streams, --realtime), off for files")
    run.set_defaults(func=_run)

    lb = verbs.add_parser("label", help="label files and folders of media into timelines, segments and subtitles")
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
    lb.add_argument("--head", help="trained head folder instead of the category map")
    lb.add_argument("--calibration", help=CALIBRATION_HELP)
    lb.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    lb.add_argument("--encoder-engine", help=ENGINE_HELP + " (--engine is local or ray here)")
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
    lb.set_defaults(func=_label)

    ev = verbs.add_parser("events", help="list alerts (or status/label records) from the SQLite event store")
    ev.add_argument("--db", help="event store (default: sinks.sqlite.path of --config, else streamclf-events.db)")
    ev.add_argument("--config", help="YAML config whose sinks.sqlite.path to read")
    ev.add_argument("--source", help="only this source")
    ev.add_argument("--since", help="ISO date/time or an age like 30m, 2h, 7d")
    ev.add_argument("--label", help="only this label")
    ev.add_argument("--type", default="alert", choices=["alert", "status", "labels"], help="which records")
    ev.add_argument("--limit", type=int, help="at most this many (newest last)")
    ev.add_argument("--json", action="store_true", help="the whole records as a JSON array instead of a table")
    ev.set_defaults(func=_events)

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
    tr.set_defaults(func=_train)

    md = verbs.add_parser("models", help="list encoders and heads: labels, input, size, license, weights here or not")
    md.add_argument("--bench", action="store_true", help="also measure each available encoder's speed on this machine")
    md.add_argument("--json", action="store_true", help="JSON instead of a table")
    md.add_argument(
        "--wide",
        action="store_true",
        help="every column (kind, input, license terms); the default fits a 100-column terminal",
    )
    md.add_argument("--device", help="device for --bench: auto, cpu, cuda, cuda:N")
    md.add_argument("--engine", default="auto", help="engine for --bench: " + ENGINE_HELP)
    md.set_defaults(func=_models)

    evl = verbs.add_parser("eval", help="fused vs audio-only vs video-only accuracy on labeled clips")
    evl.add_argument("data", help="folder with a sub-folder per category, or a CSV of path,label (as for train)")
    evl.add_argument("--head", help="trained head folder to evaluate (default: the category map)")
    evl.add_argument("--calibration", help=CALIBRATION_HELP)
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
    evl.set_defaults(func=_eval)

    cal = verbs.add_parser("calibrate", help="fit the zero-shot fusion's calibration on your own labeled clips")
    cal.add_argument(
        "data",
        help="folder with a sub-folder per category, or a CSV of path,label (as for train); "
        "labels are category-map names",
    )
    cal.add_argument("--out", required=True, help="calibration file to write (YAML); use it with --calibration")
    cal.add_argument("--config", help="YAML config (its encoders are the ones calibrated)")
    cal.add_argument("--note", help="a line for the card: where the clips come from")
    _encoder_flags(cal)
    cal.set_defaults(func=_calibrate)

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
    cmp.set_defaults(func=_compare)
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
