"""Zero-shot fusion on real image+sound pairs (avpairs): fused vs audio-only vs video-only, per split.

    .venv/bin/python benchmarks/fusion_real.py [--splits report tune] [--gap 2] [--config FILE]
    .venv/bin/python benchmarks/fusion_real.py --make-split    # rewrite benchmarks/avpairs_split.csv

Each avpairs row (a picture of a thing, a recording of its sound) becomes a short MP4 (the still
picture while the sound plays, at most 10 s, at least one 2 s window; ``streamclf.clips.pair_clip``),
and the clips of a split are run by ``streamclf eval --compose`` (``streamclf.evaluate``): one stream,
3 s of silence and grey before each clip, fused / audio-only / video-only by stripping tracks. Writes
benchmarks/results/fusion_real.{md,json}. Clips and composed streams are cached under the streamclf
cache folder (STREAMCLF_CACHE), keyed by their inputs.

The split, benchmarks/avpairs_split.csv, is made by ``make_split`` (rule: ``SPLIT_RULE``) and holds
one row per avpairs row with the category the project's category map should name (``LABELS``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamclf.clips import pair_clips  # noqa: E402
from streamclf.encoders import cache_dir  # noqa: E402
from streamclf.evaluate import DEFAULT_GAP, DEFAULT_THRESHOLD, evaluate, summary_lines, table_rows  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "avpairs"
SPLIT = ROOT / "benchmarks" / "avpairs_split.csv"
RESULTS = ROOT / "benchmarks" / "results"
PAIR_SETTINGS = {"fps": 4.0, "max_seconds": 10.0, "min_seconds": 2.0}
SPLIT_RULE = (
    "Rows sharing a recording (the photo and the drawing of a farm animal play byte-identical "
    "sounds) are one group and always fall on the same side. Groups are ordered by the SHA-1 of the "
    "sound's bytes (column `recording`); within each category-map category with two or more "
    "recordings they alternate report, tune, report, ... (report gets the odd one); the categories "
    "with one recording are pooled, ordered the same way, and alternate tune, report, ... "
    "Tune on `tune`; quote `report`."
)
REPORT_NOTE = (
    "How blind the report split is: its per-clip errors were read after the session-9 run (two clips "
    "lost to the microphone's generic `music` while the camera named the instrument). A rule designed "
    "from that pattern (a modality that names only a parent defers on which child it is to the "
    "modalities that name one) was then tried on the tune split only: it fixed one tune clip and lost "
    "another (net 0 of 26), so it was not shipped and the report split was not run with it. The report "
    "figure is therefore free of that rule, but not of having been looked at."
)
SURVIVORS = {"audio only": "audio", "video only": "video"}  # eval run -> the encoder a one-encoder system keeps
TARGET_FUSED, TARGET_GAIN = 0.8, 0.1  # issue 16: fused >= 80 % and >= the better single modality + 10 pts
ISSUE_THRESHOLD = 0.3  # the score the issue quoted its gap figure at (10 of 146 windows)

# avpairs category -> the category map's name for it. The map is coarser: percussion is `drums` (its
# AudioSet members include Percussion, Maraca, Tambourine, Cymbal, Marimba/xylophone), wind and brass
# (accordion, harmonica and didgeridoo too) are `brass_wind`, bowed and plucked strings other than guitars
# are `strings`, a band or an orchestra is `music`.
LABELS = {
    "horse": "horse",
    "cattle": "cattle",
    "cat": "cat",
    "pig": "pig",
    "dog": "dog",
    "sheep": "sheep_goat",
    "singing": "singing",
    "band": "music",
    "orchestra": "music",
    "guitar": "guitar",
    "banjo": "guitar",
    "piano": "piano_keyboard",
    "organ": "piano_keyboard",
    "cello": "strings",
    "violin": "strings",
    "harp": "strings",
    "drums": "drums",
    "castanets": "drums",
    "cymbal": "drums",
    "maracas": "drums",
    "tambourine": "drums",
    "triangle": "drums",
    "xylophone": "drums",
    **{
        c: "brass_wind"
        for c in (
            "accordion",
            "clarinet",
            "flute",
            "french horn",
            "harmonica",
            "saxophone",
            "trombone",
            "trumpet",
            "tuba",
            "didgeridoo",
        )
    },
}
# avpairs categories that span several map categories: by the row's name
BY_NAME = {
    "farm_chicken": "chicken",
    "farm_duck": "duck_goose",
    "farm_owl": "bird",
    "vehicle_steam_train": "train",
    "vehicle_car": "car",
}


def map_label(row: dict[str, str]) -> str:
    """The category-map name for one pairs.csv row (a row of an unknown category is an error)."""
    for prefix, label in BY_NAME.items():
        if row["name"].startswith(prefix):
            return label
    if row["category"] not in LABELS:
        raise ValueError(
            f"pairs.csv: {row['name']}: category {row['category']!r} has no category-map name; "
            f"add it to LABELS in {Path(__file__).name}"
        )
    return LABELS[row["category"]]


def make_split(data: Path = DATA) -> list[dict[str, str]]:
    """The tune/report split of ``data``/pairs.csv, by the rule in the module docstring (deterministic)."""
    with open(data / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    recording = {r["name"]: hashlib.sha1((data / r["sound"]).read_bytes()).hexdigest()[:12] for r in rows}
    label = {r["name"]: map_label(r) for r in rows}
    groups: dict[str, set[str]] = {}  # category -> recordings
    for r in rows:
        groups.setdefault(label[r["name"]], set()).add(recording[r["name"]])
    side: dict[str, str] = {}
    singles = sorted(next(iter(g)) for g in groups.values() if len(g) == 1)
    for i, rec in enumerate(singles):
        side[rec] = ("tune", "report")[i % 2]
    for g in groups.values():
        if len(g) > 1:
            for i, rec in enumerate(sorted(g)):
                side[rec] = ("report", "tune")[i % 2]
    return [
        {
            "name": r["name"],
            "sound": r["sound"],
            "recording": recording[r["name"]],
            "avpairs_category": r["category"],
            "category": label[r["name"]],
            "split": side[recording[r["name"]]],
        }
        for r in rows
    ]


def write_split(rows: list[dict[str, str]], path: Path = SPLIT) -> None:
    import textwrap

    header = [
        "avpairs tune/report split, made by benchmarks/fusion_real.py --make-split.",
        *textwrap.wrap(SPLIT_RULE, 100),
    ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("".join(f"# {line}\n" for line in header))
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def read_split(path: Path = SPLIT) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def split_csv(rows: list[dict[str, str]], split: str, data: Path, cache: Path) -> Path:
    """The split's clips (made once) as a path,label CSV that ``streamclf eval`` reads."""
    with open(data / "pairs.csv", newline="", encoding="utf-8") as f:
        pairs = {r["name"]: r for r in csv.DictReader(f)}
    chosen = [r for r in rows if r["split"] == split]
    clips = pair_clips(
        [(r["name"], data / pairs[r["name"]]["image"], data / pairs[r["name"]]["sound"]) for r in chosen],
        cache / "clips",
        progress=_say,
        **PAIR_SETTINGS,
    )
    out = cache / f"{split}.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([str(p), r["category"]] for p, r in zip(clips, chosen, strict=True))
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "streamclf")
    return git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes in streamclf/)" if dirty else "")


def one_encoder(data: Path, config: Any, run: str, gap: float, cache: Path) -> dict[str, Any]:
    """``run``'s media (the other track removed) through a system that has only the surviving encoder."""
    other = "video" if SURVIVORS[run] == "audio" else "audio"
    alone = config.model_copy(update={other: getattr(config, other).model_copy(update={"enabled": False})})
    return evaluate(
        data,
        alone,
        compose=True,
        gap=gap,
        threshold=DEFAULT_THRESHOLD,
        work_dir=cache / "media",
        progress=_say,
        runs=[run],
    )


def removal_rows(results: dict[str, dict[str, Any]], alone: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Per split and removed track: the fused system's accuracy vs the surviving encoder's alone, and the target."""
    rows = [
        [
            "split",
            "track removed",
            "fused system (both encoders)",
            "surviving encoder alone",
            "difference",
            "target (>= -1 pt)",
        ]
    ]
    for split, r in results.items():
        for run, modality in SURVIVORS.items():
            both, one = r["runs"][run]["accuracy"], alone[split]["runs"][run]["accuracy"]
            gone = "video" if modality == "audio" else "audio"
            rows.append(
                [
                    split,
                    gone,
                    f"{100 * both:.1f}",
                    f"{100 * one:.1f} ({modality})",
                    f"{100 * (both - one):+.1f}",
                    "met" if both >= one - 0.01 else "missed",
                ]
            )
    return rows


def markdown(
    results: dict[str, dict[str, Any]], meta: dict[str, Any], alone: dict[str, dict[str, Any]] | None = None
) -> str:
    lines = [
        "# Zero-shot fusion on real image+sound pairs (avpairs)",
        "",
        f"Commit {meta['commit']}, {meta['date']}; fusion: {meta['fusion']}. Each figure names the split it "
        f"comes from: **report** is the held-back part (quote it), **tune** the part to tune on "
        f"(`benchmarks/avpairs_split.csv`).",
        "",
        "Each avpairs row is a still picture shown while its real sound plays (MP4, 4 fps, the sound's "
        "length capped at 10 s, at least 2 s). A split's clips run as one composed stream "
        f"(`streamclf eval --compose`, {meta['gap']:g} s of silence and grey before each clip and at the end). "
        "Audio only / video only: the same stream with the other track removed from the file. "
        "A clip is right when the score-summed top-1 of the windows lying mostly inside it names its "
        "category.",
        "",
    ]
    for split, r in results.items():
        runs = r["runs"]
        head, *rows = table_rows(r)
        lines += [
            f"## {split} split: {r['clips']} clips, {len(r['categories'])} categories",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(x) + " |" for x in rows),
            "",
            *(f"- {x}" for x in summary_lines(r)[1:]),
        ]
        wrong: dict[str, int] = {}
        for e in r["events"]:
            if e["fused"] != e["label"]:
                wrong[str(e["fused"])] = wrong.get(str(e["fused"]), 0) + 1
        lines.append(
            "- wrong fused labels: " + ", ".join(f"{k} x{v}" for k, v in sorted(wrong.items(), key=lambda kv: -kv[1]))
        )
        either = [e for e in r["events"] if e["label"] in (e["audio only"], e["video only"])]
        lost = [
            f"{Path(e['path']).stem} ({e['label']}: fused {e['fused']}, audio {e['audio only']}, video "
            f"{e['video only']})"
            for e in either
            if e["fused"] != e["label"]
        ]
        need = max(TARGET_FUSED, max(runs["audio only"]["accuracy"], runs["video only"]["accuracy"]) + TARGET_GAIN)
        lines += [
            f"- issue 16 target: fused >= {100 * need:.1f} % (>= {100 * TARGET_FUSED:g} % and the better single "
            f"modality + {100 * TARGET_GAIN:g} pts): "
            + ("met" if runs["fused"]["accuracy"] >= need - 1e-9 else "missed"),
            f"- clips one modality alone names right: {len(either)}/{r['clips']} "
            f"({100 * len(either) / r['clips']:.1f} %, the most a fusion that follows one modality per clip "
            "can reach); of those, fusion loses: " + ("; ".join(lost) or "none"),
        ]
        low = [s for s in runs["fused"]["gap_scores"] if s >= ISSUE_THRESHOLD]
        lines += [
            f"- gap windows with a fused label >= {ISSUE_THRESHOLD} (the issue's figure): "
            f"{len(low)}/{runs['fused']['gap_windows']}",
            f"- run time: {r['seconds']:.0f} s (composing the stream, three runs)",
            "",
        ]
    if alone:
        head, *rows = removal_rows(results, alone)
        lines += [
            "## A modality removed at run time",
            "",
            "The fused system (both encoders loaded) on the stream with one track removed from the file, vs a "
            "system configured with only the surviving encoder (`audio.enabled: false` or `video.enabled: "
            "false`) on the same file. Target (issue 16): fused >= the surviving modality alone - 1 pt.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(x) + " |" for x in rows),
            "",
        ]
    lines += ["## Split", "", meta["split_rule"], "", REPORT_NOTE, ""]
    lines += ["| split | rows | recordings | categories |", "|---|---|---|---|"]
    for split, s in meta["split_counts"].items():
        lines.append(f"| {split} | {s['rows']} | {s['recordings']} | {s['categories']} |")
    lines += [
        "",
        f"Run time: {meta['seconds']:.0f} s wall for everything above, on {meta['machine']}; "
        + ("clips and streams made in this run (empty cache)." if meta["fresh"] else "clips reused from the cache."),
        "",
        "## Commands",
        "",
        "```",
        *meta["commands"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", nargs="+", default=["report"], choices=["report", "tune"])
    ap.add_argument("--gap", type=float, default=DEFAULT_GAP)
    ap.add_argument("--config", help="YAML config to run eval with (default: the defaults)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=None, help="clips and composed streams (default: streamclf cache)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--no-removal",
        dest="removal",
        action="store_false",
        help="skip the one-encoder runs (the 'modality removed at run time' table)",
    )
    ap.add_argument("--make-split", action="store_true", help="rewrite benchmarks/avpairs_split.csv and stop")
    args = ap.parse_args()
    if not (args.data / "pairs.csv").exists():
        sys.exit(f"fusion_real: {args.data}/pairs.csv not found (the shared avpairs data)")
    if args.make_split:
        write_split(make_split(args.data))
        print(f"wrote {SPLIT}")
        return
    rows = read_split()
    if rows != make_split(args.data):
        sys.exit(
            f"fusion_real: {SPLIT} does not match {args.data} any more; check the data, or rerun with "
            "--make-split and say so with the results"
        )
    from streamclf.config import load_config

    config = load_config(args.config)
    cache = args.cache or cache_dir() / "fusion_real"
    fresh = not (cache / "clips").exists()
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    alone: dict[str, dict[str, Any]] = {}
    for split in args.splits:
        data = split_csv(rows, split, args.data, cache)
        results[split] = evaluate(
            data,
            config,
            compose=True,
            gap=args.gap,
            threshold=DEFAULT_THRESHOLD,
            work_dir=cache / "media",
            progress=_say,
        )
        if args.removal:
            runs = [one_encoder(data, config, run, args.gap, cache) for run in SURVIVORS]
            alone[split] = {**runs[0], "runs": {k: v for r in runs for k, v in r["runs"].items()}}
    counts = {
        s: {
            "rows": sum(r["split"] == s for r in rows),
            "recordings": len({r["recording"] for r in rows if r["split"] == s}),
            "categories": len({r["category"] for r in rows if r["split"] == s}),
        }
        for s in ("report", "tune")
    }
    opts = (f" --config {args.config}" if args.config else "") + (
        f" --gap {args.gap:g}" if args.gap != DEFAULT_GAP else ""
    )
    meta = {
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fusion": next(iter(results.values()))["fusion"],
        "gap": args.gap,
        "split_rule": SPLIT_RULE,
        "split_counts": counts,
        "seconds": round(time.monotonic() - started, 1),
        "fresh": fresh,
        "machine": f"{os.cpu_count()} CPU cores",
        "commands": [
            f".venv/bin/python benchmarks/fusion_real.py --splits {' '.join(args.splits)}{opts}",
            "# the same, one split by hand (CACHE: the streamclf cache folder):",
            f"streamclf eval CACHE/fusion_real/report.csv --compose --json report.json{opts}",
            "# one-encoder system (the removal table): a config with video.enabled: false (or audio),",
            "# run on the stripped stream: fusion_real.one_encoder -> evaluate(..., runs=['audio only'])",
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_real.json").write_text(
        json.dumps({"meta": meta, "splits": results, "one_encoder": alone}, indent=1) + "\n"
    )
    (args.out / "fusion_real.md").write_text(markdown(results, meta, alone))
    for split, r in results.items():
        print(
            f"{split}: "
            + " | ".join(f"{k} {100 * v['accuracy']:.1f} %" for k, v in r["runs"].items())
            + f" | gain {100 * r['gain']:+.1f} | gap >= {DEFAULT_THRESHOLD:g}: {r['runs']['fused']['gap_hot']}/"
            f"{r['runs']['fused']['gap_windows']}"
        )
    print(f"wrote {args.out / 'fusion_real.md'} and .json in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
