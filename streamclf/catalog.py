"""Names the command line checks and lists before any model loads.

Importing torch takes seconds; ``--help`` and a mistyped label or method
should answer at once. So the fusion method names and the fused label names
of a config are read here from plain data (a constant, the category map
YAML, a head's card), with only the standard library and PyYAML.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .config import Config
    from .head_card import HeadCard

# Each detector's classes (encoders.MODELS has them with the weights; a test keeps the two in step).
DETECTOR_CLASSES: dict[str, list[str]] = {"ssdlite_person": ["person"]}

# Every fusion method by family, in the order `compare` reports them; fusion.methods.METHODS
# builds them (a test keeps the two in step).
FUSION_FAMILIES: dict[str, str] = {
    "audio": "unimodal",
    "video": "unimodal",
    "concat": "feature",
    "weighted_sum": "feature",
    "attention": "feature",
    "gated": "feature",
    "tensor": "feature",
    "lowrank": "feature",
    "mkl": "kernel",
    "average": "decision",
    "soft_vote": "decision",
    "weighted_average": "decision",
    "majority_vote": "decision",
    "stacking": "decision",
    "cca": "shared space",
    "hybrid": "hybrid",
}
FUSION_METHODS: tuple[str, ...] = tuple(FUSION_FAMILIES)
# These keep their training set (a kernel, a CCA fit): `compare` runs them, `train` cannot save them.
COMPARE_ONLY: tuple[str, ...] = ("mkl", "cca")
TRAINABLE: tuple[str, ...] = tuple(m for m in FUSION_METHODS if m not in COMPARE_ONLY)

BUILTIN_CATEGORIES = Path(__file__).with_name("data") / "categories.yaml"


def methods_help(methods: Iterable[str] = FUSION_METHODS) -> str:
    """``methods`` grouped by family, for ``--help``."""
    families: dict[str, list[str]] = {}
    for method in methods:
        families.setdefault(FUSION_FAMILIES[method], []).append(method)
    return "; ".join(f"{family}: {', '.join(methods)}" for family, methods in families.items())


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` choices nearest to ``name`` by spelling, nearest first (a typo, a plural, another case)."""
    choices = list(choices)
    by_case = {c.lower(): c for c in choices}
    ranked = difflib.get_close_matches(name.lower(), list(by_case), n=n, cutoff=0.0)
    return [by_case[c] for c in ranked]


def head_card(folder: str | Path) -> HeadCard | None:
    """A trained head's card, without its weights; None when it cannot be read or is not valid (loading the head
    then says why, in one line)."""
    from .head_card import HeadCard

    try:
        return HeadCard.read(folder)
    except ValueError:
        return None


def fused_labels(config: Config) -> list[str] | None:
    """The labels fusion will produce: the category map's names, or a trained head's classes and those of the
    person detector's classes it does not name (``fusion.trained.HeadFusion.add_detector``) unless the detector is
    off.

    None when the file cannot be read here; loading the models then reports it.
    """
    try:
        if config.fusion.head:
            card = head_card(config.fusion.head)
            if card is None:
                return None
            classes = list(card.head.classes)
            if config.detector.enabled is not False:
                classes += [c for c in DETECTOR_CLASSES.get(config.detector.encoder, []) if c not in classes]
            return classes
        doc = yaml.safe_load(Path(config.fusion.categories or BUILTIN_CATEGORIES).read_text(encoding="utf-8"))
        return [str(c) for c in doc["categories"]]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None


def check_alert_labels(labels: Iterable[str], names: list[str], where: str = "config") -> None:
    """Raise one ConfigError line for the first alert label fusion cannot produce, with the nearest names."""
    from .config import ConfigError  # pydantic: not needed for --help

    known = set(names)
    for label in labels:
        if label not in known:
            raise ConfigError(
                f"{where}: alerts.rules: {label!r} is not a fused label; closest: "
                f"{', '.join(closest(label, names))} ({len(names)} labels in all)"
            )
