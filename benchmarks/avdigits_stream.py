"""Streaming check of the shipped AV-digits heads: composed MP4s of a held-out speaker and held-out images.

    .venv/bin/python benchmarks/avdigits_stream.py [--streams 3] [--digits 20] [--snr DB]

For each stream, runs `streamclf run` with the fused, audio-only and video-only heads and scores the
windows that lie inside a digit's slot against the ground-truth timeline. Prints a table and writes
benchmarks/results/avdigits_stream.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import yaml
from sklearn.datasets import load_digits

from streamclf import load_config, run
from streamclf.avdigits import compose_stream, image_folds, segment_accuracy

ROOT = Path(__file__).resolve().parents[1]
HEADS = {"fused": "avdigits", "audio only": "avdigits-audio", "video only": "avdigits-video"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--digits", type=int, default=20, help="digits per stream (1 s each)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "avdigits_stream.json"))
    args = ap.parse_args()
    card = yaml.safe_load((ROOT / "models" / "heads" / "avdigits" / "card.yaml").read_text())
    speaker, fold = card["metrics"]["held_out_speaker"], card["metrics"]["held_out_image_fold"]
    pool = np.flatnonzero(image_folds(load_digits().target) == fold)
    results: dict[str, list[float]] = {k: [] for k in HEADS}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(args.streams):
            digits = [int(d) for d in np.random.default_rng(100 + s).integers(0, 10, args.digits)]
            stream = Path(tmp) / f"stream{s}.mp4"
            timeline = compose_stream(stream, digits, speaker, image_pool=pool, seed=s)
            for name, head in HEADS.items():
                out = Path(tmp) / f"{s}-{head}.jsonl"
                run([str(stream)], out=out,
                    config=load_config(**{"fusion.head": str(ROOT / "models" / "heads" / head), "fusion.smoothing": 1.0}))
                records = [json.loads(line) for line in out.read_text().splitlines()]
                results[name].append(segment_accuracy(records, timeline)["accuracy"])
    print(f"{'head':12s} {'accuracy (mean over streams)':>30s}  per stream")
    for name, accs in results.items():
        print(f"{name:12s} {np.mean(accs):30.3f}  {' '.join(f'{a:.3f}' for a in accs)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"speaker": speaker, "image_fold": fold, "streams": args.streams,
                                          "digits_per_stream": args.digits, "accuracy": results}, indent=1))


if __name__ == "__main__":
    main()
