"""A person seen and heard: the fused `person` score on real clips with and without a person in view.

    .venv/bin/python benchmarks/person_evidence.py [--label NAME]

Issue 17 item 3: the person detector is the camera's evidence for `person`, a voice is the
microphone's, and fusion joins them as independent evidence (noisy-OR, the voice at its map link
0.4). This runs real clips through the pipeline's models with the detector on (its default 2 fps)
and an alert rule on `person`, so every window record carries the smoothed fused score an alert
would see (`watched.person`), and counts the windows at or over the alert thresholds (0.5, the
default `min_score`; 0.7, configs/surveillance.yaml's person rule). With a person in view: the GRID
talking heads as recorded, the same with the sound removed, the Kinetics pancake clip (people
cooking). Without: Big Buck Bunny with its soundtrack, GRID voices over Big Buck Bunny's picture
(a voice off camera), and sound-only files (FSDD spoken digits, the scratch human sounds: no
picture at all). Those are the report side: the detector's calibration (``--fit``) is fitted on the
other half of GRID and the 720p Big Buck Bunny excerpt, which are never measured here. Run it on two
commits to compare fusion rules; ``--label`` names the run in benchmarks/results/person_evidence.json
(runs with other labels are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "person_evidence.json"
STRENGTHS = (0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths --fit chooses from
THRESHOLDS = (0.5, 0.7)  # the default alert min_score; the surveillance config's person rule


if TYPE_CHECKING:  # torch loads with the models, after the arguments are read
    from streamclf.classifier import Classifier
    from streamclf.recorder import Recorder


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def clips(tmp: Path) -> list[tuple[str, Path, bool]]:
    """(group, file, a person in view) for every clip measured (the report side); derived clips go to ``tmp``."""
    grid = sorted((DATA / "media" / "grid").glob("*.mpg"))[1::2]  # the even ones are the tune side
    if not grid:
        raise SystemExit(f"{DATA}: no GRID clips (set STREAMCLF_SHARED_DATA to the shared data folder)")
    bbb = DATA / "media" / "bbb_360p_60s.mp4"
    out: list[tuple[str, Path, bool]] = [("GRID: seen and heard", p, True) for p in grid]
    for i, p in enumerate(grid):
        muted = tmp / f"muted_{p.stem}.mp4"
        _ffmpeg("-i", str(p), "-an", "-c:v", "copy", str(muted))
        out.append(("GRID: seen, sound removed", muted, True))
        voice = tmp / f"voice_over_bbb_{p.stem}.mp4"  # each voice over its own stretch of the cartoon
        _ffmpeg(
            *("-ss", str(5 + 10 * i), "-t", "3", "-i", str(bbb), "-i", str(p)),
            *("-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(voice)),
        )
        out.append(("GRID voice over Big Buck Bunny", voice, False))
    out.append(("Kinetics: people cooking", DATA / "media" / "flipping_a_pancake.mkv", True))
    out.append(("Big Buck Bunny with its sound", bbb, False))
    sounds = sorted((DATA / "fsdd").glob("*_george_0.wav")) + sorted((DATA / "sounds/scratch/Human").glob("*"))
    out += [("sound only: digits, human sounds", p, False) for p in sounds]
    return out


def tune_clips() -> list[tuple[Path, bool]]:
    """What ``--fit`` fits the detector's calibration on, never measured: the other GRID half, the 720p excerpt."""
    grid = sorted((DATA / "media" / "grid").glob("*.mpg"))[0::2]
    return [(p, True) for p in grid] + [(DATA / "media" / "bbb_720p_30s.mp4", False)]


def fit_detector(models: Classifier) -> None:
    """Platt-scale the detector's person score on the tune clips; print the fit for the calibration file.

    The regularisation is chosen by leave-one-out log-loss over ``STRENGTHS``
    (each GRID clip, and each fifth of the cartoon, held out in turn), on the
    tune clips only.
    """
    import numpy as np
    import yaml

    from streamclf.fusion.calibration import fit_modality, logit, sigmoid
    from streamclf.labeling.common import file_windows

    fusion = models.fusion
    person = fusion.names.index("person")
    raw, target, fold = [], [], []
    for k, (path, has_person) in enumerate(tune_clips()):
        memory = {path.name: models.memory(path.name)}
        for windows, _ in file_windows(path, path.name, models.config):
            for scored in models.score(windows, memory):
                if "detector" in scored.embeddings.scores:
                    raw.append(fusion.raw(scored.embeddings)["detector"])
                    target.append(np.eye(len(fusion.names))[person] * has_person)
                    fold.append(k)
    x, y, folds = np.stack(raw), np.stack(target), np.array(fold)
    for part, rows in enumerate(np.array_split(np.flatnonzero(~y[:, person].astype(bool)), 5)):
        folds[rows] = len(tune_clips()) + part  # the one cartoon clip: five held-out stretches
    sees = fusion.sees_raw["detector"]

    def held_out_loss(strength: float) -> float:
        losses = []
        for k in np.unique(folds):
            fit, _ = fit_modality(x[folds != k], y[folds != k], sees, fusion.names, {}, strength)
            p = np.clip(sigmoid(fit.slope * logit(x[folds == k, person]) + fit.bias), 1e-4, 1 - 1e-4)
            t = y[folds == k, person]
            losses += list(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
        return float(np.mean(losses))

    loss = {c: round(held_out_loss(c), 4) for c in STRENGTHS}
    best = min(loss, key=loss.__getitem__)
    # one category: no bias of its own (it would be the intercept again)
    fit, measured = fit_modality(x, y, sees, fusion.names, {}, best)
    print(f"{len(x)} windows of {len(tune_clips())} tune clips; leave-one-out log-loss by strength {loss}")
    print(yaml.safe_dump({"detector": fit.model_dump(), "measured": measured, "strength": best}, sort_keys=False))


def person_scores(models: Classifier, recorder: Recorder, path: Path) -> list[tuple[float, float | None]]:
    """Per window: the smoothed fused `person` score (as an alert sees it) and the detector's best score."""
    from streamclf.labeling.common import file_windows

    out, memory = [], models.memory(path.name)
    for windows, _ in file_windows(path, path.name, models.config):
        for scored in models.score(windows, {path.name: memory}):
            record = recorder(scored, memory).to_dict()
            det = record.get("detector")
            out.append((record["watched"]["person"], det["score"] if det else None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this commit", help="name of this run in the results file")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--fit", action="store_true", help="fit the detector's calibration on the tune clips instead")
    args = parser.parse_args()
    import subprocess as sp

    from streamclf import load_config
    from streamclf.classifier import Classifier
    from streamclf.recorder import Recorder

    config = load_config(**{"detector.enabled": True, "alerts.rules": [{"label": "person"}]})
    models = Classifier(config)
    if args.fit:
        fit_detector(models)
        return
    recorder = Recorder(models, models.config)
    t0 = time.time()
    groups: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group, path, person in clips(Path(tmp)):
            rows = person_scores(models, recorder, path)
            g = groups.setdefault(group, {"person": person, "files": 0, "windows": 0, "scores": []})
            g["files"] += 1
            g["windows"] += len(rows)
            g["scores"] += [round(float(s), 4) for s, _ in rows]
    for g in groups.values():
        scores = g.pop("scores")
        g["at_or_over"] = {str(t): sum(s >= t for s in scores) for t in THRESHOLDS}
        g["max"] = max(scores, default=0.0)
        g["median"] = sorted(scores)[len(scores) // 2] if scores else 0.0
    summary = {}
    for t in map(str, THRESHOLDS):
        pos = [g for g in groups.values() if g["person"]]
        neg = [g for g in groups.values() if not g["person"]]
        summary[t] = {
            "recall": round(sum(g["at_or_over"][t] for g in pos) / sum(g["windows"] for g in pos), 4),
            "false_positive_rate": round(sum(g["at_or_over"][t] for g in neg) / sum(g["windows"] for g in neg), 4),
        }
    commit = sp.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    run = {
        "commit": commit,
        "summary": summary,
        "groups": groups,
        "seconds": round(time.time() - t0, 1),
        "load": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(f"{'clips':<34} {'person?':>7} {'windows':>7} " + " ".join(f"{'>=' + str(t):>6}" for t in THRESHOLDS))
    for name, g in groups.items():
        counts = " ".join(f"{g['at_or_over'][str(t)]:>6}" for t in THRESHOLDS)
        print(f"{name:<34} {'yes' if g['person'] else 'no':>7} {g['windows']:>7} {counts}")
    for t, s in summary.items():
        print(f"threshold {t}: recall {s['recall']:.1%}, false positives {s['false_positive_rate']:.1%}")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[args.label] = run
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out} ({args.label})")


if __name__ == "__main__":
    main()
