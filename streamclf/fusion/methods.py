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


CARD, WEIGHTS = "card.yaml", "head.safetensors"


def save_head(head: Head, out: str | Path, card: dict[str, Any]) -> Path:
    """Write ``out/head.safetensors`` and ``out/card.yaml`` (the head's spec plus ``card``)."""
    if not head.savable:
        saved = ", ".join(m for m, f in METHODS.items() if getattr(getattr(f, "func", f), "savable", True))
        raise ValueError(
            f"fusion method {head.method!r} keeps its training set and cannot be saved as a head; use one of: {saved}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in head.arrays().items()}, str(out / WEIGHTS))
    doc = {"head": head.spec(), "params": head.n_params(), **card}
    (out / CARD).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def load_head(path: str | Path) -> tuple[Head, dict[str, Any]]:
    """Rebuild a saved head; errors name the folder and what is wrong."""
    path = Path(path)
    try:
        card = yaml.safe_load((path / CARD).read_text())
        spec = dict(card["head"])
        arrays = load_file(str(path / WEIGHTS))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: not a head folder (needs {CARD} and {WEIGHTS}): {e.filename} is missing") from e
    except (KeyError, TypeError, yaml.YAMLError, OSError, SafetensorError) as e:
        raise ValueError(f"{path}: unreadable head card or weights: {e}") from e
    method = spec.pop("method")
    head = build_head(method, spec.pop("modalities"), spec.pop("classes"), spec.pop("dims"), **spec)
    try:
        head.load_arrays(arrays)
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: weights do not match the card's {method} head: {e}") from e
    return head, card
