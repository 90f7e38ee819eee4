"""Person present or absent per window: the detector's recall and false positives on real clips, and its cost.

    .venv/bin/python benchmarks/detector.py [--quick]

Clips with people (the shared GRID talking heads, the Kinetics pancake clip, in which people cook) and
without (Big Buck Bunny, a cartoon with animals; sound-only files, whose windows have no picture) run
through the pipeline's models as `streamclf run` would with the detector on (default window, 4 fps,
the detector at its default 2 fps with the motion skip). A window counts as "person" when its record's
`detector.score` reaches the default threshold; every window of a clip with people should, no window of
the others. Also measures the detector's time per frame (OpenCV at one and at two threads; OpenVINO, the
default engine, at the worker's threads whatever the label; real frames) and how many due frames the
motion skip saved. Prints a table and writes benchmarks/results/detector.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def clips(quick: bool) -> list[tuple[str, Path, bool]]:
    """(group, path, has a person) for every clip measured."""
    media = DATA / "media"
    grid = sorted((media / "grid").glob("*.mpg"))[: 3 if quick else None]
    sounds = sorted((DATA / "fsdd").glob("*.wav"))[:3] + sorted((DATA / "sounds" / "scratch").rglob("*.wav"))[:3]
    return (
        [("GRID talking heads", p, True) for p in grid]
        + [("Kinetics: flipping a pancake", media / "flipping_a_pancake.mkv", True)]
        + [("Big Buck Bunny 360p", media / "bbb_360p_60s.mp4", False)]
        + ([] if quick else [("Big Buck Bunny 720p", media / "bbb_720p_30s.mp4", False)])
        + [("sound only (FSDD, sound effects)", p, False) for p in sounds]
    )


def window_records(models, path: Path) -> list[dict]:
    """The window records of one file, as the pipeline's worker and recorder make them."""
    from streamclf.labeling.common import file_windows
    from streamclf.recorder import Recorder

    recorder, memory = Recorder(models, models.config), models.memory(path.name)
    out = []
    for windows, decoded in file_windows(path, path.name, models.config):
        if decoded.fatal:
            raise RuntimeError(f"{path}: {decoded.errors[-1]}")
        out += [recorder(s, memory).to_dict() for s in models.score(windows, {path.name: memory})]
    return out


def per_frame_ms(models, repeats: int = 3) -> dict[str, float]:
    """The detector's time per frame on real frames (GRID and Big Buck Bunny), best of ``repeats``, by thread count."""
    import av
    import cv2

    frames = []
    for path in (DATA / "media" / "grid" / "bbaf2n.mpg", DATA / "media" / "bbb_360p_60s.mp4"):
        with av.open(str(path)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i % 10 == 0:
                    frames.append(f.to_ndarray(format="rgb24", width=456, height=256))
                if len(frames) % 8 == 0 and i:
                    break
    out = {}
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        models.detector.model.detect(frames[:2])
        best = min(_timed(lambda: models.detector.model.detect(frames)) for _ in range(repeats))
        out[f"{threads} thread{'s' if threads > 1 else ''}"] = round(best / len(frames) * 1000, 1)
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 GRID clips, no 720p excerpt")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detector.json"))
    args = parser.parse_args()
    from streamclf import load_config
    from streamclf.classifier import Classifier

    config = load_config(**{"detector.enabled": True})
    models = Classifier(config)
    threshold = config.detector.threshold
    groups: dict[str, dict] = {}
    for group, path, person in clips(args.quick):
        records = window_records(models, path)
        scores = [(r["detector"] or {}).get("score", 0.0) for r in records]
        g = groups.setdefault(
            group, {"person": person, "files": 0, "windows": 0, "with_person": 0, "ran": 0, "still": 0, "scores": []}
        )
        g["files"] += 1
        g["windows"] += len(records)
        g["with_person"] += sum(s >= threshold for s in scores)
        g["ran"] += sum((r["detector"] or {}).get("ran", 0) for r in records)
        g["still"] += sum((r["detector"] or {}).get("still", 0) for r in records)
        g["scores"] += scores
    for g in groups.values():
        s = np.array(g.pop("scores") or [0.0])
        g.update(
            score_min=round(float(s.min()), 3),
            score_median=round(float(np.median(s)), 3),
            score_max=round(float(s.max()), 3),
        )
    positives = [g for g in groups.values() if g["person"]]
    negatives = [g for g in groups.values() if not g["person"]]
    recall = sum(g["with_person"] for g in positives) / sum(g["windows"] for g in positives)
    fpr = sum(g["with_person"] for g in negatives) / sum(g["windows"] for g in negatives)
    cost = per_frame_ms(models)
    result = {
        "threshold": threshold,
        "detector_fps": config.detector.fps,
        "window": models.config.window.model_dump(),
        "recall": round(recall, 4),
        "false_positive_rate": round(fpr, 4),
        "windows": {
            "with_person": sum(g["windows"] for g in positives),
            "without": sum(g["windows"] for g in negatives),
        },
        "groups": groups,
        "ms_per_frame": cost,
        "engine": models.detector.model.engine,  # OpenVINO keeps the threads it was compiled with (the worker's)
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "quick": args.quick},
    }
    print(
        f"{'clips':<36} {'person?':>7} {'files':>5} {'windows':>7} {'says person':>11} "
        f"{'min':>6} {'median':>6} {'max':>6} {'ran':>5} {'still':>5}"
    )
    for name, g in groups.items():
        print(
            f"{name:<36} {'yes' if g['person'] else 'no':>7} {g['files']:>5} {g['windows']:>7} "
            f"{g['with_person']:>11} {g['score_min']:>6.3f} {g['score_median']:>6.3f} {g['score_max']:>6.3f} "
            f"{g['ran']:>5} {g['still']:>5}"
        )
    print(
        f"recall {recall:.1%}, false positives {fpr:.1%} at threshold {threshold}; "
        f"detector per frame: {', '.join(f'{v} ms ({k})' for k, v in cost.items())}"
    )
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
