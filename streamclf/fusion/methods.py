"""The registry of fusion methods, and saving/loading fitted heads (safetensors + card)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..head_card import CARD, HeadCard
from .decision import DecisionHead, HybridHead, StackingHead
from .heads import Head, NeuralHead
from .kernel import MKLHead
from .shared import CCAHead


def _unimodal(
    modality: str, modalities: tuple[str, ...], classes: list[str], dims: dict[str, int], seed: int = 0, **kw: Any
) -> Head:
    kw.pop("net", None)
    return NeuralHead((modality,), classes, dims, seed, net="unimodal", **kw)


METHODS: dict[str, Callable[..., Head]] = {
    "audio": partial(_unimodal, "audio"),
    "video": partial(_unimodal, "video"),
    **{
        net: partial(NeuralHead, net=net)
        for net in ("concat", "weighted_sum", "attention", "gated", "tensor", "lowrank")
    },
    "mkl": MKLHead,
    **{rule: partial(DecisionHead, rule=rule) for rule in DecisionHead.RULES},
    "stacking": StackingHead,
    "cca": CCAHead,
    "hybrid": HybridHead,
}
"""Unimodal baselines first, then feature, kernel, decision, shared-space and hybrid fusion."""


def build_head(
    method: str, modalities: tuple[str, ...], classes: list[str], dims: dict[str, int], seed: int = 0, **hyper: Any
) -> Head:
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method](tuple(modalities), list(classes), dims, seed, **hyper)


WEIGHTS = "head.safetensors"


def save_head(head: Head, out: str | Path, card: dict[str, Any]) -> Path:
    """Write ``out/head.safetensors`` and ``out/card.yaml`` (the head's spec plus ``card``, checked by
    ``HeadCard`` first, so a card that would not load again is never written)."""
    if not head.savable:
        saved = ", ".join(m for m, f in METHODS.items() if getattr(getattr(f, "func", f), "savable", True))
        raise ValueError(
            f"fusion method {head.method!r} keeps its training set and cannot be saved as a head; use one of: {saved}"
        )
    out = Path(out)
    doc = HeadCard.parse({"head": head.spec(), "params": head.n_params(), **card}, out / CARD).dump()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in head.arrays().items()}, str(out / WEIGHTS))
    (out / CARD).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def load_head(path: str | Path) -> tuple[Head, HeadCard]:
    """Rebuild a saved head and its card; errors are one line naming the file and what is wrong."""
    path = Path(path)
    if not (path / CARD).is_file() or not (path / WEIGHTS).is_file():
        missing = CARD if not (path / CARD).is_file() else WEIGHTS
        raise ValueError(f"{path}: not a head folder (needs {CARD} and {WEIGHTS}): {path / missing} is missing")
    card = HeadCard.read(path)
    try:
        arrays = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise ValueError(f"{path / WEIGHTS}: unreadable head weights: {e}") from e
    spec = card.head
    try:
        head = build_head(spec.method, tuple(spec.modalities), spec.classes, spec.dims, **spec.kwargs())
    except TypeError as e:  # a setting the method does not take
        raise ValueError(f"{path / CARD}: head: {e}") from None
    try:
        head.load_arrays(arrays)
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: weights do not match the card's {spec.method} head: {e}") from e
    return head, card
