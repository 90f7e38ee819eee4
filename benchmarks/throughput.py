"""File throughput against the decode limit, the compute limit and a naive peer (media-seconds per wall-second).

    .venv/bin/python benchmarks/throughput.py [--files bbb_360p_60s.mp4 bbb_720p_30s.mp4] [--quick]

For each file, in one run, each measurement (the fastest of --repeats rounds of every mode) in a fresh process (so no
run inherits another's warm caches or allocator settings), models loaded before the clock starts:
- streamclf: `iter_records` at default settings (decoder thread and inference overlap; engine auto);
- streamclf torch: the same with `engine: torch` (the encoders as before the engines: the "before" figure);
- decode limit: PyAV decoding every video frame and the audio of the file, nothing else;
- compute limit: `Classifier.score` alone on the file's windows, decoded beforehand and held in memory,
  with its stage times, so that the floor (the least wall time possible, as a multiple of the decode time)
  is a product of measured figures: frames x seconds per frame + audio patches x seconds per patch;
- compiled (with --compile): streamclf with `compile: true`, compiled before the clock;
- naive peer: what a user would write without streamclf: OpenCV VideoCapture reading every frame,
  the same encoders called per sampled frame in eager fp32, the audio loaded with librosa and the
  audio encoder run on every window, no threads.
Prints a table and writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODES = ("streamclf", "streamclf_torch", "decode", "compute", "naive")


def _decode(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        for packet in container.demux(streams):
            for _ in packet.decode():
                pass


def _naive(path: Path, config: object) -> None:
    import cv2
    import librosa
    import torch

    from streamclf.encoders import MODELS

    w = config.window  # type: ignore[attr-defined]
    image, audio = MODELS["efficientnet_lite0"], MODELS["yamnet"]
    img_model, img_t = image.builder(weights=image.weights).eval(), image.weights.transforms()
    aud_model, aud_t = audio.builder(weights=audio.weights).eval(), audio.weights.transforms()
    cap = cv2.VideoCapture(str(path))
    every = max(1, round(cap.get(cv2.CAP_PROP_FPS) / w.fps))
    i = 0
    with torch.no_grad():
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                img_model.embed(img_t(torch.from_numpy(rgb[None])))
            i += 1
        cap.release()
        y, sr = librosa.load(str(path), sr=16000, mono=True)
        n, hop = int(w.length * sr), int(w.hop * sr)
        for s in range(0, max(1, len(y) - n + 1), hop):
            aud_model.embed(aud_t(torch.from_numpy(np.ascontiguousarray(y[s : s + n]))))


def child(mode: str, path: Path) -> dict:
    """One measurement in this process: wall seconds with the models already loaded."""
    from streamclf import load_config
    from streamclf.classifier import Classifier
    from streamclf.labeling import iter_records
    from streamclf.labeling.common import file_windows

    engine = "torch" if mode in ("streamclf_torch", "compiled") else "auto"
    config = load_config(compile=mode == "compiled", engine=engine)
    models = Classifier(config) if mode in ("streamclf", "streamclf_torch", "compiled", "compute") else None
    windows = []
    if mode == "compute":
        for chunk, *_ in file_windows(path, path.name, models.config):
            windows += chunk
    if mode == "compiled":  # compile before the clock: every batch size goes through one dynamic graph
        for m, enc in models.encoders.items():
            one = np.zeros((256, 256, 3), np.uint8) if m == "video" else np.zeros(16000, np.float32)
            for n in (4, 2, 3):
                enc.embed([np.stack([one] * n)] if m == "video" else [np.tile(one, n)])
    t0 = time.perf_counter()
    if mode in ("streamclf", "streamclf_torch", "compiled"):
        n = sum(1 for _ in iter_records(path, classifier=models))
    elif mode == "compute":
        from streamclf.stages import Timings

        class Totals(Timings):
            def __init__(self) -> None:
                super().__init__()
                self.total: dict[str, float] = {}

            def add(self, stage: str, seconds: float) -> None:
                super().add(stage, seconds)
                self.total[stage] = self.total.get(stage, 0.0) + seconds

        timings = Totals()
        memory = {path.name: models.memory(path.name)}
        n = sum(len(models.score(windows[s : s + 8], memory, timings)) for s in range(0, len(windows), 8))
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "windows": n, **floor_parts(models, windows, timings)}
    elif mode == "decode":
        _decode(path)
        n = 0
    else:
        _naive(path, config)
        n = 0
    return {"wall_s": time.perf_counter() - t0, "windows": n}


def floor_parts(models, windows: list, timings) -> dict:
    """What the compute limit is made of: seconds per stage, and the work items (frames encoded once each,
    audio patches) with the seconds each cost, so that the floor is a product of measured figures."""
    from streamclf.encoders.yamnet import PATCH_HOP_FRAMES, PATCH_SAMPLES

    stages = {k: round(v, 3) for k, v in timings.total.items()}
    frames = len({(f.source, f.pts) for w in windows for f in w.frames})
    hop = PATCH_HOP_FRAMES * 160  # samples between YAMNet patches
    patches = sum(1 + max(0, len(w.audio) - PATCH_SAMPLES) // hop for w in windows if w.audio is not None)
    return {
        "stages_s": stages,
        "frames": frames,
        "patches": patches,
        "s_per_frame": round(stages.get("encode video", 0.0) / max(frames, 1), 5),
        "s_per_patch": round(stages.get("encode audio", 0.0) / max(patches, 1), 5),
    }


def floor(compute: dict, decode_s: float) -> dict:
    """The least wall time streamclf could take on this file, as a multiple of the decode time: the encoders'
    measured cost (frames x seconds per frame + audio patches x seconds per patch), which already uses every
    core, then the whole compute limit (fusion and bookkeeping too) and that plus decoding, the two sharing
    the cores."""
    encoders = compute["frames"] * compute["s_per_frame"] + compute["patches"] * compute["s_per_patch"]
    return {
        **{k: compute[k] for k in ("frames", "patches", "s_per_frame", "s_per_patch", "stages_s")},
        "encoders_s": round(encoders, 2),
        "encoders_vs_decode": round(encoders / decode_s, 2),
        "compute_vs_decode": round(compute["wall_s"] / decode_s, 2),
        "compute_plus_decode_vs_decode": round((compute["wall_s"] + decode_s) / decode_s, 2),
    }


def measure(mode: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        raise SystemExit(f"throughput: {mode} on {path.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--files",
        nargs="+",
        default=["bbb_360p_60s.mp4", "bbb_720p_30s.mp4"],
        help="names under shared/data/media, or paths",
    )
    ap.add_argument("--quick", action="store_true", help="a 6 s cut of the first file: checks the script")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also streamclf with compile: true (compiled before the clock, about a minute each run)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts (noisy machines)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput.json"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    from streamclf.labeling.common import probe_duration as _probe_duration

    files = [Path(f) if Path(f).exists() else DATA / "media" / f for f in args.files]
    for f in files:
        if not f.exists():
            raise SystemExit(f"throughput: {f} is absent (set STREAMCLF_SHARED_DATA)")
    if args.quick:
        import tempfile

        cut = Path(tempfile.mkdtemp()) / "cut.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-t", "6", "-i", str(files[0]), "-c", "copy", str(cut)], check=True
        )
        files = [cut]
    rows = []
    load_start = os.getloadavg()  # the machine is shared: say how busy it was
    for f in files:
        media = _probe_duration(f) or 0.0
        row: dict = {"file": f.name, "media_s": round(media, 1)}
        modes = MODES + (("compiled",) if args.compile else ())
        walls: dict[str, list[float]] = {m: [] for m in modes}
        parts: list[dict] = []  # the compute runs' breakdowns
        for _ in range(1 if args.quick else args.repeats):  # rounds of every mode: a load change hits them all
            for mode in modes:
                got = measure(mode, f)
                walls[mode].append(got["wall_s"])
                if mode == "compute":
                    parts.append(got)
                print(
                    f"{f.name:22s} {mode:15s} {walls[mode][-1]:7.2f} s  {media / walls[mode][-1]:6.2f} media-s/s",
                    flush=True,
                )
        for mode in modes:
            wall = min(walls[mode])
            row[mode] = {
                "wall_s": round(wall, 2),
                "media_s_per_wall_s": round(media / wall, 2),
                "walls_s": [round(w, 2) for w in walls[mode]],
            }
        speed = {m: row[m]["media_s_per_wall_s"] for m in MODES}
        limit = min(speed["decode"], speed["compute"])
        row["ratios"] = {
            "vs_limit": round(speed["streamclf"] / limit, 2),
            "vs_decode": round(speed["streamclf"] / speed["decode"], 2),
            "wall_vs_decode": round(speed["decode"] / speed["streamclf"], 2),  # target <= 2.0
            "torch_wall_vs_decode": round(speed["decode"] / speed["streamclf_torch"], 2),
            "vs_compute": round(speed["streamclf"] / speed["compute"], 2),
            "vs_naive": round(speed["streamclf"] / speed["naive"], 2),  # target >= 3
            "torch_vs_naive": round(speed["streamclf_torch"] / speed["naive"], 2),
            "engine_vs_torch": round(speed["streamclf"] / speed["streamclf_torch"], 2),
        }
        row["floor"] = floor(min(parts, key=lambda p: p["wall_s"]), row["decode"]["wall_s"])
        if args.compile:
            row["ratios"]["compiled_vs_naive"] = round(row["compiled"]["media_s_per_wall_s"] / speed["naive"], 2)
        rows.append(row)
    print()
    print(
        "| file | media s | streamclf | streamclf torch | decode limit | compute limit | naive peer "
        "| wall / decode wall (target <= 2) | vs naive (target >= 3) | torch: wall / decode, vs naive |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = {m: r[m]["media_s_per_wall_s"] for m in MODES}
        q = r["ratios"]
        print(
            f"| {r['file']} | {r['media_s']} | {s['streamclf']} | {s['streamclf_torch']} | {s['decode']} "
            f"| {s['compute']} | {s['naive']} | {q['wall_vs_decode']} | {q['vs_naive']} "
            f"| {q['torch_wall_vs_decode']}, {q['torch_vs_naive']} |"
        )
    for r in rows:
        fl = r["floor"]
        print(
            f"{r['file']}: floor {fl['frames']} frames x {fl['s_per_frame'] * 1000:.1f} ms + {fl['patches']} "
            f"patches x {fl['s_per_patch'] * 1000:.2f} ms = {fl['encoders_s']} s of encoders = "
            f"{fl['encoders_vs_decode']}x the decode time (compute limit {fl['compute_vs_decode']}x, "
            f"with decoding on the same cores {fl['compute_plus_decode_vs_decode']}x; target <= 2)"
        )
    doc = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "unit": "media-seconds per wall-second",
        "quick": args.quick,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
