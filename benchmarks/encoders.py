"""Encoder speed: eager fp32 vs streamclf's runtime paths, with top-1 agreement on real frames and sounds.

    .venv/bin/python benchmarks/encoders.py [--quick] [--compile]

Inputs are real: frames of the shared Big Buck Bunny clip sampled as the pipeline samples them, and
2 s windows of the shared sound effects. The reference is the model called the plain way (eager
fp32, one batch per worker batch of 8 windows), measured first, before streamclf touches the
process's allocator settings. Each path is then timed on the same inputs; agreement is the share of
images (patches for audio) whose top-1 class matches the reference, and the largest logit
difference. bf16 is timed only where the hardware has it (emulated bf16 is slower than fp32 and
would say nothing); its agreement is measured everywhere. Prints a table and writes
benchmarks/results/encoders.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def real_inputs(quick: bool) -> dict[str, list[np.ndarray]]:
    """Per-window inputs as the worker gets them: frame stacks and 2 s waveforms."""
    from streamclf import load_config
    from streamclf.labeling.common import file_windows
    from streamclf.sources import read_audio

    config = load_config()
    frames: list[np.ndarray] = []
    for chunk, *_ in file_windows(DATA / "media" / "bbb_360p_60s.mp4", "bbb", config):
        for w in chunk:
            frames += [f.image for f in w.frames[-2:]]  # the new frames of each 0.5 s hop
        if quick and len(frames) >= 16:
            break
    sounds = sorted(p for p in (DATA / "sounds").rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    waves: list[np.ndarray] = []
    for p in sounds[: 6 if quick else 60]:
        y = read_audio(p)
        waves += [y[s:s + 32000] for s in range(0, max(1, len(y) - 32000 + 1), 32000)][:4]
    return {"video": [np.stack(frames[i:i + 4]) for i in range(0, len(frames), 4)], "audio": waves}


def plain(name: str, inputs: list[np.ndarray], batch: int) -> tuple[float, np.ndarray]:
    """The model the way a torchvision user calls it: eager fp32, one call per batch."""
    from streamclf.encoders import MODELS

    entry = MODELS[name]
    model, transform = entry.builder(weights=entry.weights).eval(), entry.weights.transforms()
    xs = [transform(torch.from_numpy(np.ascontiguousarray(x))) for x in inputs]
    with torch.inference_mode():
        model.embed(torch.cat(xs[:batch]))
        t0 = time.perf_counter()
        logits = [model.embed(torch.cat(xs[s:s + batch]))[1] for s in range(0, len(xs), batch)]
        wall = time.perf_counter() - t0
    return wall, torch.cat(logits).numpy()


def optimised(name: str, inputs: list[np.ndarray], batch: int, precision: str, compile: bool
              ) -> tuple[float, np.ndarray, str, float]:
    from streamclf.encoders import Encoder

    t0 = time.perf_counter()
    enc = Encoder(name, torch.device("cpu"), precision, compile)
    enc.embed(inputs[:batch])  # warm-up (and the compile, when asked)
    ready = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = [enc.embed(inputs[s:s + batch]) for s in range(0, len(inputs), batch)]
    wall = time.perf_counter() - t0
    # scores back to logits for the comparison: the model's own head outputs
    scores = np.concatenate([s for out in outs for _, s in out])
    return wall, scores, enc.describe(), ready


def compare(ref_logits: np.ndarray, scores: np.ndarray, activation: str) -> dict:
    ref = torch.from_numpy(ref_logits)
    ref_scores = (ref.sigmoid() if activation == "sigmoid" else ref.softmax(-1)).numpy()
    return {"top1_agreement": round(float((ref_scores.argmax(1) == scores.argmax(1)).mean()), 4),
            "max_score_diff": float(np.abs(ref_scores - scores).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few inputs: checks the script, not the machine")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoders.json"))
    args = ap.parse_args()
    from streamclf.encoders import MODELS, native_bf16

    torch.set_num_threads(os.cpu_count() or 1)
    inputs = real_inputs(args.quick)
    bf16_native = native_bf16(torch.device("cpu"))
    names = {"video": "efficientnet_lite0", "audio": "yamnet"}
    batch = 8  # windows per worker batch (config batch_windows)
    refs = {m: plain(names[m], inputs[m], batch) for m in names}  # before any Encoder exists
    rows = []
    paths = [("fp32", False)] + ([("fp32", True)] if args.compile else []) + [("bf16", False)]
    for m, name in names.items():
        n_items = int(sum(len(x) for x in inputs[m])) if m == "video" else len(refs[m][1])
        unit = "images" if m == "video" else "patches"
        ref_wall = refs[m][0]
        rows.append({"encoder": name, "path": "eager fp32 (plain)", "items": n_items, "unit": unit,
                     "per_s": round(n_items / ref_wall, 1), "speedup": 1.0, "top1_agreement": 1.0,
                     "max_score_diff": 0.0, "ready_s": None})
        for precision, comp in paths:
            subset = inputs[m] if precision != "bf16" or bf16_native else inputs[m][: max(2, len(inputs[m]) // 8)]
            wall, scores, desc, ready = optimised(name, subset, batch, precision, comp)
            k = len(scores)
            agree = compare(refs[m][1][:k], scores, MODELS[name].weights.meta["activation"])
            timed = precision != "bf16" or bf16_native
            rows.append({"encoder": name, "path": desc + ("" if timed else " (emulated: agreement only)"),
                         "items": k, "unit": unit, "per_s": round(k / wall, 1) if timed else None,
                         "speedup": round(ref_wall / n_items * k / wall, 2) if timed else None,
                         **agree, "ready_s": round(ready, 1)})
    print("| encoder | path | items | per second | vs eager fp32 | top-1 agreement | max score diff | ready (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['path']} | {r['items']} {r['unit']} | {r['per_s']} | {r['speedup']} "
              f"| {r['top1_agreement']:.4f} | {r['max_score_diff']:.2g} | {r['ready_s']} |")
    doc = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": bf16_native},
           "quick": args.quick, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
