"""The verbs behind the command line: one function per verb, over the Python API.

Each takes the parsed arguments (``cli.build_parser``), builds the config from
``--config`` and the flags that set config fields (``overrides``), calls the
API, prints what a person reads, and returns the exit code (see ``cli``).
Every check of the arguments and the config comes before the first import
of torch or a model; this module imports only the standard library at the top.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import AlertRule

SETTING = "config:"  # the dest prefix of a flag that sets a config field: "config:window.fps"


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the command line sets, by path (the flags declared with ``_setting``)."""
    return {k[len(SETTING) :]: v for k, v in vars(args).items() if k.startswith(SETTING) and v is not None}


def run(args: argparse.Namespace) -> int:
    from .catalog import check_alert_labels, fused_labels
    from .config import load_config

    given = overrides(args)
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":") if ":" in args.mqtt else (args.mqtt, "", "")
        given["sinks.mqtt.host"] = host
        if port:
            given["sinks.mqtt.port"] = port
    config = load_config(args.config, **given)
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


def label(args: argparse.Namespace) -> int:
    from .config import load_config

    if args.ray_address and args.engine != "ray":
        print("streamclf: error: --ray-address needs --engine ray", file=sys.stderr)
        return 2
    config = load_config(args.config, **overrides(args))
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


def events(args: argparse.Namespace) -> int:
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


def models(args: argparse.Namespace) -> int:
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


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(args: argparse.Namespace) -> int:
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


def evaluate(args: argparse.Namespace) -> int:
    from .config import load_config

    if args.gap is not None and not args.compose:
        raise ValueError("--gap needs --compose (clip by clip there are no gaps)")
    config = load_config(args.config, **overrides(args))
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


def calibrate(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config, **overrides(args))
    from .calibrate import calibrate, report

    cal = calibrate(args.data, args.out, config, note=args.note or "", progress=_progress)
    print(f"wrote {args.out}\n{report(cal)}")
    return 0


def compare(args: argparse.Namespace) -> int:
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
