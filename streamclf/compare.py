"""Side-by-side comparison of every fusion method on AV-digits, clean and under stress.

Every method trains on the same folds (leave-one-speaker-out for audio,
disjoint image folds) and is scored on the same test pairs, so the numbers
in one table are comparable. Fusion can lose to the best single modality;
the table says so when it does.

About 440 lines on purpose: folds, training, scoring and the tables are one
experiment; every figure of a table must come from the same folds and runs,
which is easiest to see when they are written in one place.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from .avdigits import AVDigits
from .catalog import FUSION_FAMILIES
from .fusion import METHODS, build_head
from .fusion.heads import Head, reuse_fits

MODALITIES = ("audio", "video")
CLASSES = [str(d) for d in range(10)]
RUNS = ("fused", "audio only", "video only")  # the three `eval` runs of a held-out-speaker stream
# (name, audio condition, image condition, audio present, video present)
CONDITIONS = [
    ("clean", "clean", "clean", True, True),
    ("audio snr10", "snr10", "clean", True, True),
    ("audio snr0", "snr0", "clean", True, True),
    ("audio snr-5", "snr-5", "clean", True, True),
    ("video gauss σ10", "clean", "gauss10", True, True),
    ("video gauss σ80", "clean", "gauss", True, True),
    ("video occlude 10%", "clean", "occlude10", True, True),
    ("video occlude 40%", "clean", "occlude", True, True),
    ("no audio", "clean", "clean", False, True),
    ("no video", "clean", "clean", True, False),
]


@dataclass
class Split:
    """Paired rows for one fold: indices into the audio and image tables."""

    train_audio: np.ndarray
    train_image: np.ndarray
    test_audio: np.ndarray
    test_image: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def pair(
    audio_idx: np.ndarray,
    audio_label: np.ndarray,
    image_idx: np.ndarray,
    image_label: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """For every audio row, an image of the same digit drawn from ``image_idx``."""
    by_label = {d: image_idx[image_label[image_idx] == d] for d in np.unique(audio_label)}
    return np.array([rng.choice(by_label[audio_label[i]]) for i in audio_idx], dtype=np.int64)


def splits(data: AVDigits, seed: int = 0, folds: int | None = None) -> list[Split]:
    """Leave one speaker out for audio; image fold k is the test images of fold k."""
    out = []
    for k, speaker in enumerate(data.speakers[:folds]):
        rng = np.random.default_rng(seed * 1000 + k)
        test_a = np.flatnonzero(data.audio_speaker == speaker)
        train_a = np.flatnonzero(data.audio_speaker != speaker)
        test_i = np.flatnonzero(data.image_fold == k)
        train_i = np.flatnonzero(data.image_fold != k)
        out.append(
            Split(
                train_a,
                pair(train_a, data.audio_label, train_i, data.image_label, rng),
                test_a,
                pair(test_a, data.audio_label, test_i, data.image_label, rng),
                data.audio_label[train_a],
                data.audio_label[test_a],
            )
        )
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| averaged over confidence bins."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    return float(total)


def evaluate(head: Head, data: AVDigits, split: Split) -> dict[str, Any]:
    """Accuracy under every condition, plus F1, calibration and speed on clean pairs."""
    n = len(split.y_test)
    out: dict[str, Any] = {"accuracy": {}}
    for name, a_cond, i_cond, a_on, v_on in CONDITIONS:
        x = {"audio": data.audio[a_cond][split.test_audio], "video": data.image[i_cond][split.test_image]}
        present = {"audio": np.full(n, a_on), "video": np.full(n, v_on)}
        t0 = time.perf_counter()
        probs = head.predict_proba(x, present)
        elapsed = time.perf_counter() - t0
        pred = probs.argmax(1)
        out["accuracy"][name] = float((pred == split.y_test).mean())
        if name == "clean":
            out["macro_f1"] = float(f1_score(split.y_test, pred, average="macro"))
            out["ece"] = ece(probs, split.y_test)
            out["ms_per_sample"] = 1000.0 * elapsed / n
    out["params"] = head.n_params()
    return out


def fold_runs(
    data: AVDigits,
    methods: list[str],
    seed: int,
    k: int,
    split: Split,
    hyper: dict[str, Any],
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every method trained and scored on one fold; shared unimodal and out-of-fold heads are fitted once."""
    dims = {"audio": data.audio["clean"].shape[1], "video": data.image["clean"].shape[1]}
    x = {"audio": data.audio["clean"][split.train_audio], "video": data.image["clean"][split.train_image]}
    present = {m: np.ones(len(split.y_train), bool) for m in MODALITIES}
    out = {}
    with reuse_fits():
        for method in methods:
            t0 = time.perf_counter()
            head = build_head(method, MODALITIES, CLASSES, dims, seed=seed, **hyper)
            head.fit(x, present, split.y_train, groups=data.audio_speaker[split.train_audio])
            result = evaluate(head, data, split)
            result.update(fold=k, seed=seed, train_s=time.perf_counter() - t0)
            out[method] = result
            if progress:
                progress(
                    f"seed {seed} fold {k} ({data.speakers[k]}) {method:16s} "
                    f"clean {result['accuracy']['clean']:.3f}  {result['train_s']:.1f}s"
                )
    return out


_data: AVDigits | None = None


def _start_worker(data: AVDigits) -> None:
    global _data
    _data = data
    torch.set_num_threads(1)  # small heads: one thread per fold beats two threads on one fold


def _worker_fold(*args: Any) -> dict[str, dict[str, Any]]:
    assert _data is not None
    return fold_runs(_data, *args)


def compare(
    data: AVDigits,
    methods: list[str] | None = None,
    seeds: int = 1,
    folds: int | None = None,
    hyper: dict[str, Any] | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and score every method on every fold and seed; returns per-run and summary results.

    Folds run in ``workers`` processes (default: one per core, at most one
    per fold), each on one thread; the numbers do not depend on it beyond
    float rounding. The workers are spawned, so a script calling this with
    more than one worker needs the ``if __name__ == "__main__":`` guard.
    """
    methods = methods or list(METHODS)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown fusion method {m!r}; choose from {', '.join(METHODS)}")
    hyper = hyper or {}
    tasks = [
        (methods, seed, k, split, hyper) for seed in range(seeds) for k, split in enumerate(splits(data, seed, folds))
    ]
    workers = min(len(tasks), workers or os.cpu_count() or 1)
    if workers <= 1:
        done = [fold_runs(data, *task, progress=progress) for task in tasks]
    else:
        if progress:
            progress(f"{len(tasks)} folds x {len(methods)} methods in {workers} processes")
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(data,)) as pool:
            futures = [pool.submit(_worker_fold, *task) for task in tasks]
            for future in as_completed(futures):
                fold = future.result()
                if progress:
                    r = next(iter(fold.values()))
                    progress(
                        f"seed {r['seed']} fold {r['fold']} ({data.speakers[r['fold']]}) done: "
                        + ", ".join(f"{m} {v['accuracy']['clean']:.3f}" for m, v in fold.items())
                    )
            done = [f.result() for f in futures]
    runs = {m: [fold[m] for fold in done] for m in methods}
    return {
        "methods": methods,
        "conditions": [c[0] for c in CONDITIONS],
        "runs": runs,
        "summary": {m: summarise(r) for m, r in runs.items()},
        "data": {
            "audio_rows": int(len(data.audio_label)),
            "image_rows": int(len(data.image_label)),
            "speakers": list(data.speakers),
            "folds": folds or len(data.speakers),
            "seeds": seeds,
        },
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(values: list[float]) -> list[float]:
        return [float(np.mean(values)), float(np.std(values))]

    return {
        "accuracy": {c: ms([r["accuracy"][c] for r in runs]) for c in runs[0]["accuracy"]},
        "macro_f1": ms([r["macro_f1"] for r in runs]),
        "ece": ms([r["ece"] for r in runs]),
        "ms_per_sample": float(np.median([r["ms_per_sample"] for r in runs])),
        "params": int(np.median([r["params"] for r in runs])),
        "train_s": float(np.mean([r["train_s"] for r in runs])),
    }


ZERO_SHOT = (
    "zero-shot, calibrated (default, no head)",
    "n/a: the zero-shot category map names things through ImageNet-1k and AudioSet classes, and neither "
    "label space has a class for a written or spoken digit, so zero-shot cannot name a digit at all "
    "(clean or noisy); no number is given rather than an invented one",
)


def table(result: dict[str, Any], streams: list[dict[str, Any]] | None = None) -> str:
    """Markdown table: one row per method, unimodal baselines first, best clean accuracy in bold.

    ``streams`` (``held_out_streams``) add one column per kind of held-out-speaker stream run over every
    speaker of the data (fused, mean over speakers; "-" where a method was not run) and a zero-shot row that
    says why it has no figure.
    """
    summary = result["summary"]
    conds = result["conditions"]
    every = set(result.get("data", {}).get("speakers", []))
    columns = stream_columns(
        [r for r in streams or [] if every <= set(r["speakers"]) or len(r["speakers"]) >= 2], every
    )
    best = max(s["accuracy"]["clean"][0] for s in summary.values())
    head = ["method", "family", "accuracy", "macro-F1", "ECE", "params", "ms/sample"] + conds[1:] + list(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result["methods"]:
        s = summary[m]
        acc = f"{s['accuracy']['clean'][0]:.3f} ± {s['accuracy']['clean'][1]:.3f}"
        if s["accuracy"]["clean"][0] == best:
            acc = f"**{acc}**"
        cells = [
            m,
            FUSION_FAMILIES.get(m, ""),
            acc,
            f"{s['macro_f1'][0]:.3f} ± {s['macro_f1'][1]:.3f}",
            f"{s['ece'][0]:.3f}",
            f"{s['params']:,}",
            f"{s['ms_per_sample']:.3f}",
        ]
        cells += [f"{s['accuracy'][c][0]:.3f}" for c in conds[1:]]
        cells += [f"{col[m]:.3f}" if m in col else "-" for col in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    if columns:
        lines.append("| " + " | ".join([ZERO_SHOT[0], "zero-shot"] + ["n/a"] * (len(head) - 2)) + " |")
    return "\n".join(lines)


def stream_columns(streams: list[dict[str, Any]], every: set[str] | None = None) -> dict[str, dict[str, float]]:
    """Column title -> {method: mean fused accuracy}: clean streams per audio-feature set and training recipe, then
    noisy ones. A run over only some of ``every`` speaker names them in its title (a mean over other speakers)."""
    columns: dict[str, dict[str, float]] = {}
    for noisy in (False, True):
        for r in streams:
            if noisy and r["noise"] is None:
                continue
            title = "held-out speaker stream" + (f" + {r['audio_features']}" if r["audio_features"] else "")
            title += " + noise copies" if r.get("training_noise") else ""
            title += " + fallback" if r.get("fallback") else ""
            if every and not every <= set(r["speakers"]):
                title += f" ({', '.join(r['speakers'])} only)"
            if noisy:
                title += f", noise {r['noise_snr_db']:g} dB"
            columns.setdefault(title, {})[r["fusion"]] = (r["noise"] if noisy else r["clean"])["fused"]
    return columns


def streams_table(streams: list[dict[str, Any]]) -> str:
    """Held-out-speaker streams in full: fused / audio only / video only, clean and noisy, and the gain."""
    lines = [
        "| head | audio features | held-out speakers | fused | audio only | video only | fused - best single "
        "| worst speaker: fused - best single | noise: fused | noise: audio only | noise: video only "
        "| noise: fused - best single |",
        "|" + "---|" * 12,
    ]

    def gain(r: dict[str, float]) -> float:
        return r["fused"] - max(r["audio only"], r["video only"])

    for r in streams:
        clean, noise = r["clean"], r["noise"]
        features = r["audio_features"] or "none (pooled YAMNet)"
        features += " + noise copies" if r.get("training_noise") else ""
        features += " + one-modality fallback" if r.get("fallback") else ""
        cells = [r["fusion"], features, ", ".join(r["speakers"])]
        cells += [f"{clean[k]:.3f}" for k in RUNS] + [f"{gain(clean):+.3f}", f"{r['worst_gain']:+.3f}"]
        cells += ([f"{noise[k]:.3f}" for k in RUNS] + [f"{gain(noise):+.3f}"]) if noise else ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| {ZERO_SHOT[0]} | - | - | " + " | ".join(["n/a"] * 9) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy per condition per method, grouped bars: people would rather look than read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, conds = result["methods"], result["conditions"]
    fig, ax = plt.subplots(figsize=(max(10, len(methods) * 0.9), 5))
    width = 0.8 / len(conds)
    for j, c in enumerate(conds):
        means = [result["summary"][m]["accuracy"][c][0] for m in methods]
        ax.bar(np.arange(len(methods)) + j * width, means, width, label=c)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=40, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("AV-digits: accuracy per fusion method and test condition")
    ax.legend(ncol=4, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def held_out_streams(path: Path) -> list[dict[str, Any]]:
    """The augmented ``train --group`` runs of ``benchmarks/avdigits_stream.py --held-out-speakers``, speaker means.

    Each: fusion, audio_features, noise_snr_db, clean and noise {fused, audio only, video only} (noise None when
    not measured), worst_gain (the lowest per-speaker fused minus the better single modality), speakers.
    """
    if not path.exists():
        return []
    out = []
    for key, res in json.loads(path.read_text()).items():
        if not key.startswith("held_out_speakers") or not res.get("augment") or "speakers" not in res:
            continue
        if res.get("experiment"):  # a recipe tried and not adopted: its figures stay in the JSON only
            continue
        rows = list(res["speakers"].values())
        noisy = all("stream_noise" in r for r in rows)
        out.append(
            {
                "fusion": res["fusion"],
                "audio_features": res.get("audio_features"),
                "training_noise": res.get("training_noise"),
                "fallback": res.get("fallback"),
                "noise_snr_db": res.get("noise_snr_db"),
                "speakers": list(res["speakers"]),
                "clean": {k: float(np.mean([r["stream"][k] for r in rows])) for k in RUNS},
                "noise": {k: float(np.mean([r["stream_noise"][k] for r in rows])) for k in RUNS} if noisy else None,
                "worst_gain": float(
                    min(r["stream"]["fused"] - max(r["stream"]["audio only"], r["stream"]["video only"]) for r in rows)
                ),
            }
        )
    return out


def write(result: dict[str, Any], out: Path, command: str) -> dict[str, Path]:
    """``out/fusion_avdigits.{md,json,png}``; the markdown names the command that made it."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"fusion_avdigits.{k}" for k in ("md", "json", "png")}
    d = result["data"]
    md = [
        "# AV-digits fusion comparison",
        "",
        f"Produced by `{command}`.",
        "",
        f"{d['audio_rows']} spoken digits (FSDD, speakers {', '.join(d['speakers'])}) paired by label with "
        f"{d['image_rows']} handwritten digit images (scikit-learn digits); frozen YAMNet and "
        f"EfficientNet-Lite0 embeddings; {d['folds']} folds (leave one speaker out, disjoint image folds) x "
        f"{d['seeds']} seed(s); mean ± std over runs. Training is on clean pairs only; the condition columns "
        "are test accuracy with the audio mixed with real background sounds at an SNR, the images noised or "
        "occluded, or one modality absent (handled through the mask).",
        "",
    ]
    streams = held_out_streams(out / "avdigits_stream.json")
    if streams:
        snr = sorted({r["noise_snr_db"] for r in streams if r["noise"]})
        md += [
            "The held-out speaker stream columns: a head made by `streamclf train --group` on clips of three "
            "speakers, then `streamclf eval --compose --gap 0.5` on 100 clips (1-2 s) of the fourth speaker at "
            "natural loudness with unseen images; fused top-1, mean over the four speakers "
            "(`benchmarks/avdigits_stream.py --held-out-speakers`, per speaker in `avdigits_stream.json`). "
            "`+ mfcc-shape-v1`: the head also gets the time-structured audio features of "
            "`streamclf.audio_features` (what `train` does by default; see docs/fusion-heads.md). "
            + (
                f"`noise {', '.join(f'{v:g}' for v in snr)} dB`: the same clips with a real background sound "
                "from `sounds/` under each clip at that SNR (speech power over the utterance to noise power). "
                if snr
                else ""
            )
            + "'-' = not measured.",
            "",
        ]
    md += [table(result, streams), ""]
    if streams:
        md += [
            "## Held-out speaker streams in full",
            "",
            "Means over the held-out speakers; audio only / video only are the same head with the other track "
            "removed from the input (what `eval` does).",
            "",
            streams_table(streams),
            "",
            f"{ZERO_SHOT[0]}: {ZERO_SHOT[1]}.",
            "",
        ]
    paths["md"].write_text("\n".join(md))
    paths["json"].write_text(json.dumps(result, indent=1))
    plot(result, paths["png"])
    return paths
