"""Encoder speed: eager fp32 vs streamclf's engines, with top-1 agreement on real frames and sounds.

    .venv/bin/python benchmarks/encoders.py [--quick] [--compile] [--int8] [--rounds 3]
                                            [--engines torch onnxruntime openvino]

Inputs are real: frames of the shared Big Buck Bunny clip sampled as the pipeline samples them, and
2 s windows of the shared sound effects. The reference is the model called the plain way (eager
fp32, one batch per worker batch of 8 windows). Every path is built first (its engine graph exported,
or read from the cache, and checked, as at start-up: `ready_s`); then, in each of --rounds rounds, the
reference and every path are timed back to back on the same inputs, and a path's speed-up is the
median over rounds of (reference time / path time) in the same round: the machine is shared, and
this keeps a change of load from inflating a ratio. The same for CPU time (``cpu_speedup``), which
other jobs on the cores disturb far less than wall time; each row keeps the load average of each
round. (The reference is timed after streamclf set the process's allocator
(encoders.keep_freed_memory), which speeds it up too: the ratios are conservative.)
Agreement is the share of images (patches for audio) whose top-1 class matches the reference, and the
largest score difference. The person detector's reference is OpenCV's DNN module (its runtime before
the engines); agreement there is the share of frames with the same count of boxes over 0.5 and the
same best box (score within 0.03). bf16 is timed only where the hardware has it. --int8 adds ONNX
Runtime's static int8 (the policy in docs/engines.md): calibrated on the first half of the inputs,
timed and compared on the other half. Prints a table and
writes benchmarks/results/encoders.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
BATCH = 8  # windows per worker batch (config batch_windows)


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
        waves += [y[s : s + 32000] for s in range(0, max(1, len(y) - 32000 + 1), 32000)][:4]
    return {"video": [np.stack(frames[i : i + 4]) for i in range(0, len(frames), 4)], "audio": waves}


Path_ = Callable[[list[np.ndarray]], np.ndarray]
"""A timed path: a batch of per-window inputs -> per-item scores (or detection rows)."""


def plain(name: str) -> Path_:
    """The model the way a torchvision user calls it: eager fp32, one call per batch; logits -> scores."""
    from streamclf.encoders import MODELS

    entry = MODELS[name]
    model, transform = entry.builder(weights=entry.weights).eval(), entry.weights.transforms()
    sigmoid = entry.weights.meta["activation"] == "sigmoid"

    def run(inputs: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.cat([transform(torch.from_numpy(np.ascontiguousarray(i))) for i in inputs])
            logits = model.embed(x)[1]
            return (logits.sigmoid() if sigmoid else logits.softmax(-1)).numpy()

    return run


def streamclf_path(name: str, precision: str, compile: bool, engine: str) -> tuple[Path_, str]:
    from streamclf.encoders import Encoder

    enc = Encoder(name, torch.device("cpu"), precision, compile, engine)
    return (lambda inputs: np.concatenate([s for _, s in enc.embed(inputs)])), enc.describe()


def detector_path(engine: str) -> tuple[Path_, str]:
    from streamclf.encoders import MODELS

    entry = MODELS["ssdlite_person"]
    det = entry.builder(weights=entry.weights, threads=torch.get_num_threads(), engine=engine)
    return (lambda inputs: det.detect(np.concatenate(inputs))), f"ssdlite_person {det.engine}"


def timed(fn: Path_, inputs: list[np.ndarray]) -> tuple[float, float, list]:
    """Wall and CPU seconds (this process, every thread) of one pass over ``inputs`` in worker batches; outputs."""
    outs = []
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(0, len(inputs), BATCH):
        outs.append(fn(inputs[s : s + BATCH]))
    return time.perf_counter() - t0, time.process_time() - c0, outs


def agreement(ref: list, got: list, detector: bool) -> dict:
    if detector:
        from streamclf.encoders.ssdlite import _detections_differ

        a = [d for batch in ref for d in batch]
        b = [d for batch in got for d in batch]
        same = [_detections_differ(_rows(x), _rows(y), 1) is None for x, y in zip(a, b, strict=True)]
        return {
            "top1_agreement": round(float(np.mean(same)), 4),
            "max_score_diff": float(
                max(abs((x[0, 1] if len(x) else 0) - (y[0, 1] if len(y) else 0)) for x, y in zip(a, b, strict=True))
            ),
        }
    r, g = np.concatenate(ref), np.concatenate(got)
    return {
        "top1_agreement": round(float((r.argmax(1) == g.argmax(1)).mean()), 4),
        "max_score_diff": float(np.abs(r - g).max()),
    }


def _rows(d: np.ndarray) -> np.ndarray:
    """SSDDetector.detect's (class, score, box) back to OpenCV's table (image 0, class + 1, score, box)."""
    return np.column_stack([np.zeros(len(d)), d[:, 0] + 1, d[:, 1:]]) if len(d) else np.zeros((0, 7))


def measure(
    name: str,
    m: str,
    ref: Path_,
    ref_name: str,
    paths: dict[str, tuple[Path_, float]],
    inputs: list[np.ndarray],
    rounds: int,
) -> list[dict]:
    """Rows for the reference and each path: timed back to back in each round, agreement from the first.

    Besides wall time, CPU time: another job on the shared cores stretches wall time by however long it holds
    them, CPU time far less, so ``cpu_speedup`` (the median of same-round CPU-time ratios) is the steadier
    figure under load; ``loads`` is the 1-minute load average at the start of each round.
    """
    walls: dict[str, list[float]] = {ref_name: [], **{d: [] for d in paths}}
    cpus: dict[str, list[float]] = {d: [] for d in walls}
    outs: dict[str, list] = {}
    loads = []
    for _ in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for desc, fn in [(ref_name, ref), *((d, f) for d, (f, _) in paths.items())]:
            wall, cpu, out = timed(fn, inputs)
            walls[desc].append(wall)
            cpus[desc].append(cpu)
            outs.setdefault(desc, out)
    n = sum(len(x) for x in inputs) if m != "audio" else len(np.concatenate(outs[ref_name]))
    rows = []
    for desc in walls:
        ratios = [r / w for r, w in zip(walls[ref_name], walls[desc], strict=True)]
        cpu_ratios = [r / c for r, c in zip(cpus[ref_name], cpus[desc], strict=True)]
        rows.append(
            {
                "encoder": name,
                "path": desc,
                "items": n,
                "unit": "patches" if m == "audio" else "images",
                "per_s": round(n / statistics.median(walls[desc]), 1),
                "speedup": round(statistics.median(ratios), 2),
                "speedups": [round(r, 2) for r in ratios],
                "cpu_speedup": round(statistics.median(cpu_ratios), 2),
                "cpu_speedups": [round(r, 2) for r in cpu_ratios],
                "loads": loads,
                **agreement(outs[ref_name], outs[desc], m == "detector"),
                "ready_s": round(paths[desc][1], 1) if desc in paths else None,
            }
        )
    return rows


def int8_path(name: str, calibration: list[np.ndarray]) -> tuple[Path_, str]:
    """ONNX Runtime static int8 (QDQ, per-channel weights) of the engine's fp32 graph, calibrated on real inputs."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from streamclf.encoders import Encoder
    from streamclf.encoders.engine import _ort_session, cached_path

    enc = Encoder(name, torch.device("cpu"), engine="onnxruntime")  # puts the fp32 graph in the cache
    src = cached_path(enc.weights.id, "onnxruntime", enc.runner.shape)
    batches = [
        enc.transform(torch.from_numpy(np.ascontiguousarray(x))).float().contiguous().numpy() for x in calibration
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.todo = iter(batches)

        def get_next(self) -> dict | None:
            x = next(self.todo, None)
            return None if x is None else {"x": x}

    out = Path(tempfile.mkdtemp()) / "int8.onnx"
    quantize_static(
        str(src),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    session = _ort_session(out, torch.device("cpu"), torch.get_num_threads())
    sigmoid = enc.meta["activation"] == "sigmoid"

    def run(inputs: list[np.ndarray]) -> np.ndarray:
        x = torch.cat([enc.transform(torch.from_numpy(np.ascontiguousarray(i))) for i in inputs])
        logits = torch.from_numpy(session(x.float().contiguous().numpy())[1])
        return (logits.sigmoid() if sigmoid else logits.softmax(-1)).numpy()

    return run, f"{name} int8 (onnxruntime static QDQ)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few inputs: checks the script, not the machine")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
    ap.add_argument(
        "--engines",
        nargs="+",
        default=["torch", "onnxruntime", "openvino"],
        help="fp32 engines to time (torch is streamclf's own torch path)",
    )
    ap.add_argument("--int8", action="store_true", help="also ONNX Runtime static int8, calibrated on half the inputs")
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved timing rounds; the median ratio counts (--quick: 1)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoders.json"))
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    from streamclf.encoders import native_bf16

    torch.set_num_threads(os.cpu_count() or 1)
    load_start = os.getloadavg()  # the machine is shared: say how busy it was
    inputs = real_inputs(args.quick)
    inputs["detector"] = [np.stack(inputs["video"][i]) for i in range(0, len(inputs["video"]), 2)]  # 2 fps
    bf16_native = native_bf16(torch.device("cpu"))
    rows = []
    for m, name in (("video", "efficientnet_lite0"), ("audio", "yamnet"), ("detector", "ssdlite_person")):
        detector = m == "detector"
        paths: dict[str, tuple[Path_, float]] = {}
        if detector:
            ref: Path_ = detector_path("torch")[0]
            ref_name = "OpenCV DNN (reference)"
            specs = [("openvino", functools.partial(detector_path, "openvino"))]
        else:
            ref, ref_name = plain(name), "eager fp32 (plain)"
            specs = (
                [(e, functools.partial(streamclf_path, name, "fp32", False, e)) for e in args.engines]
                + (
                    [("compiled", functools.partial(streamclf_path, name, "fp32", True, "torch"))]
                    if args.compile
                    else []
                )
                + ([("bf16", functools.partial(streamclf_path, name, "bf16", False, "torch"))] if bf16_native else [])
            )
        ref(inputs[m][:BATCH])
        for _, make in specs:
            t0 = time.perf_counter()
            fn, desc = make()
            fn(inputs[m][:BATCH])  # warm-up (and the compile, when asked)
            paths[desc] = (fn, time.perf_counter() - t0)
        rows += measure(name, m, ref, ref_name, paths, inputs[m], args.rounds)
        if args.int8 and not detector:
            half = len(inputs[m]) // 2  # calibrate on the first half, measure on the other
            t0 = time.perf_counter()
            fn, desc = int8_path(name, inputs[m][:half])
            rows += [
                dict(r, split=f"calibrated on the first {half} inputs, measured on the other {len(inputs[m]) - half}")
                for r in measure(
                    name, m, ref, ref_name, {desc: (fn, time.perf_counter() - t0)}, inputs[m][half:], args.rounds
                )
            ]
    print(
        "| encoder | path | items | per second | vs reference, wall (median of rounds) | vs reference, CPU time "
        "| top-1 agreement | max score diff | ready (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['path']} | {r['items']} {r['unit']} | {r['per_s']} | {r['speedup']} "
            f"| {r['cpu_speedup']} "
            f"| {r['top1_agreement']:.4f} | {r['max_score_diff']:.2g} | {r['ready_s']} |"
        )
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": bf16_native,
        },
        "command": "python benchmarks/encoders.py " + " ".join(sys.argv[1:]),
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "quick": args.quick,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
