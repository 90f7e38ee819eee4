"""The optimised encoder paths agree with eager fp32 on real inputs, and the benchmarks run (--quick).

Nothing here is timed: speed is for benchmarks/, these check correctness and that the scripts work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamclf import load_config
from streamclf.encoders import MODELS, Encoder
from streamclf.labeling.common import file_windows
from streamclf.sources import read_audio

from .conftest import shared

ROOT = Path(__file__).resolve().parents[1]


def _plain_scores(name: str, inputs: list[np.ndarray]) -> np.ndarray:
    entry = MODELS[name]
    model, transform = entry.builder(weights=entry.weights).eval(), entry.weights.transforms()
    with torch.inference_mode():
        logits = torch.cat([model(transform(torch.from_numpy(np.ascontiguousarray(x)))) for x in inputs])
    return (logits.sigmoid() if entry.weights.meta["activation"] == "sigmoid" else logits.softmax(-1)).numpy()


@pytest.fixture(scope="module")
def real_inputs() -> dict[str, list[np.ndarray]]:
    """Frames the pipeline samples from a real clip (decoder-side scaling included) and real sounds."""
    clip = shared("media/bbb_360p_60s.mp4")
    config = load_config(**{"window.short_side": 256})
    frames = []
    for chunk, *_ in file_windows(clip, "bbb", config):
        frames += [f.image for w in chunk for f in w.frames[-2:]]
        if len(frames) >= 100:
            break
    sounds = sorted(shared("sounds").rglob("*.wav"))[:25]
    waves = [read_audio(p)[:32000] for p in sounds]
    return {
        "efficientnet_lite0": [np.stack(frames[i : i + 4]) for i in range(0, 100, 4)],
        "yamnet": [w for w in waves if len(w) >= 16000],
    }


def _agreement(name: str, inputs: list[np.ndarray], precision: str) -> tuple[float, float]:
    """Top-1 agreement and the largest score difference with the plain model."""
    ref = _plain_scores(name, inputs)
    got = np.concatenate([s for _, s in Encoder(name, torch.device("cpu"), precision).embed(inputs)])
    assert len(got) == len(ref) >= 20
    return float((got.argmax(1) == ref.argmax(1)).mean()), float(np.abs(got - ref).max())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "yamnet"])
def test_optimised_path_agrees_with_eager_fp32(real_inputs: dict, name: str) -> None:
    """Folded batch norms, padding inside the convolution and bounded passes keep >= 99 % of top-1 labels."""
    agreement, diff = _agreement(name, real_inputs[name], "fp32")
    assert agreement >= 0.99 and diff < 1e-3, (agreement, diff)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "yamnet"])
def test_bf16_is_really_bf16_and_close(real_inputs: dict, name: str) -> None:
    """bf16 (opt-in) computes in bf16: scores move, most labels stay (measured 82-97 %).

    On the first 40 frames / 20 sounds: emulated bf16 is slow on CPUs without it.
    """
    agreement, diff = _agreement(name, real_inputs[name][: 10 if name == "efficientnet_lite0" else 20], "bf16")
    assert diff > 1e-4 and agreement >= 0.75, (agreement, diff)


@pytest.mark.slow
def test_compiled_encoder_agrees_with_eager_fp32(real_inputs: dict) -> None:
    """compile: true (a minute of torch.compile on 2 cores, hence slow) changes nothing but speed."""
    inputs = real_inputs["efficientnet_lite0"][:6]
    ref = _plain_scores("efficientnet_lite0", inputs)
    got = np.concatenate([s for _, s in Encoder("efficientnet_lite0", torch.device("cpu"), compile=True).embed(inputs)])
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99 and np.abs(got - ref).max() < 1e-3


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        Encoder("yamnet", torch.device("cpu"), "fp8")


@pytest.mark.slow  # 20-40 s each on 2 quiet cores: the suite keeps to its 15-minute CI budget
@pytest.mark.parametrize("script", ["throughput.py", "encoders.py", "live_latency.py", "memory.py"])
def test_benchmark_quick_mode_writes_json(script: str, tmp_path: Path) -> None:
    shared("media/bbb_360p_60s.mp4")
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpus"] >= 1
    rows = doc.get("runs") or doc.get("rows")
    assert rows and all(isinstance(r, dict) for r in rows)


def test_live_capacity_counts_a_source_count_only_when_enough_of_its_runs_pass() -> None:
    """--repeats: at a box's edge one run passes or fails with the machine's drift; a count needs `need` passes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("live_latency", ROOT / "benchmarks" / "live_latency.py")
    assert spec is not None and spec.loader is not None
    live_latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live_latency)
    condition = {"settings": "surveillance", "scene": "bbb", "engine": "auto", "reuse": True, "defer": True}
    passed = {(False, 20): [1, 1, 1], (False, 24): [1, 0, 1], (True, 20): [1, 1, 1], (True, 24): [0, 1, 0]}
    rows = [
        {**condition, "detector": detector, "sources": n, "ok": bool(ok)}
        for (detector, n), oks in passed.items()
        for ok in oks
    ]
    off, on = live_latency.capacity(rows, need=2)
    assert (off["detector"], off["capacity"], off["passes"]) == (False, 24, {"20": "3/3", "24": "2/3"})
    assert (on["capacity"], on["passes"], on["tried"]) == (20, {"20": "3/3", "24": "1/3"}, [20, 24])
    assert [c["capacity"] for c in live_latency.capacity(rows)] == [24, 24]  # one run in three is enough
