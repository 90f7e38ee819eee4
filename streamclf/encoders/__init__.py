"""Per-modality encoders: builders, weights enums, and the runtime wrapper the worker uses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .efficientnet_lite import EfficientNet_Lite0_Weights, efficientnet_lite0
from .weights import Weights, WeightsEnum, WeightsUnavailable, cache_dir
from .yamnet import YAMNet_Weights, yamnet


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., torch.nn.Module]
    weights: WeightsEnum


MODELS: dict[str, ModelEntry] = {
    "yamnet": ModelEntry(yamnet, YAMNet_Weights.DEFAULT),
    "efficientnet_lite0": ModelEntry(efficientnet_lite0, EfficientNet_Lite0_Weights.DEFAULT),
}


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU: one code path for both."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Encoder:
    """A built model with the transform its weights carry.

    ``embed`` takes a list of per-window inputs (a frame stack or a waveform)
    and returns per-item embeddings and class scores, split back per input.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in MODELS:
            raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(MODELS)}")
        entry = MODELS[name]
        self.name, self.weights, self.device = name, entry.weights, device
        self.meta = entry.weights.meta
        self.modality: str = self.meta["modality"]
        self.transform = entry.weights.transforms()
        self.model = entry.builder(weights=entry.weights).to(device)
        self._activation = torch.sigmoid if self.meta["activation"] == "sigmoid" else (
            lambda x: torch.softmax(x, dim=-1))

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        if not inputs:
            return []
        batches = [self.transform(torch.from_numpy(np.ascontiguousarray(x))) for x in inputs]
        sizes = [len(b) for b in batches]
        x = torch.cat(batches)
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap with the GPU's work
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        emb, logits = self.model.embed(x)
        scores = self._activation(logits.float())
        emb, scores = emb.float().cpu().numpy(), scores.cpu().numpy()
        out, i = [], 0
        for n in sizes:
            out.append((emb[i:i + n], scores[i:i + n]))
            i += n
        return out


__all__ = ["MODELS", "Encoder", "ModelEntry", "Weights", "WeightsEnum", "WeightsUnavailable", "cache_dir",
           "pick_device", "yamnet", "YAMNet_Weights", "efficientnet_lite0", "EfficientNet_Lite0_Weights"]
