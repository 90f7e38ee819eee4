"""The shared category map: everyday things in both label spaces.

It joins native label spaces (ImageNet-1k indices, AudioSet display names,
...) into categories that a camera and a microphone can both name. A category
may be seen by one modality only; the map says so and fusion respects it.

A category may name a ``parent`` (``music`` for ``guitar``): the parent is the
generic thing, its children the specific ones. Generic tags score high on
anything of their kind (AudioSet's "Music" is near 1 on every instrument), so
fusion lets a child with evidence explain its parent away instead of letting
the generic label win.

A category may say ``evidence: independent`` (``person``): its modalities are
independent, one-sided signs of it (a person in the picture; a voice heard),
so fusion joins them by noisy-OR instead of pooling them, and a modality that
misses it (a silent person, a voice off camera) does not lower it. ``link:
{space: strength}`` says how far one space's evidence goes towards the
category (a voice means someone is about, not that they are in the picture):
that space's calibrated score is multiplied by the strength (default 1).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

BUILTIN = Path(__file__).resolve().parents[1] / "data" / "categories.yaml"


@dataclass
class CategoryMap:
    """``members[space][category]`` = native class indices of that category."""

    names: list[str]
    members: dict[str, dict[str, list[int]]]
    path: str = ""
    parents: dict[str, str] = field(default_factory=dict)  # child -> parent
    independent: set[str] = field(default_factory=set)  # categories whose evidence is joined by noisy-OR
    links: dict[str, dict[str, float]] = field(default_factory=dict)  # category -> space -> strength

    def children(self) -> dict[int, list[int]]:
        """Parent index -> its children's indices."""
        out: dict[int, list[int]] = {}
        for child, parent in self.parents.items():
            out.setdefault(self.names.index(parent), []).append(self.names.index(child))
        return out

    def strengths(self, space: str) -> np.ndarray:
        """Per category, how far ``space``'s evidence goes towards it (its ``link``; 1 where none is given)."""
        return np.array([self.links.get(c, {}).get(space, 1.0) for c in self.names])

    @classmethod
    def load(
        cls, path: str | Path, label_names: dict[str, list[str]], known: Collection[str] = frozenset()
    ) -> CategoryMap:
        """Parse the YAML, resolving names against ``label_names[space]``.

        Integer members and ``"a-b"`` ranges are indices; other strings are
        class names and must match exactly. A space in ``known`` that no
        encoder in use has (Kinetics when the video encoder is ImageNet) is
        skipped; any other unknown space is an error. Every problem names the file.
        """
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read category map: {e}") from e
        if not isinstance(doc, dict) or set(doc) != {"categories"} or not isinstance(doc["categories"], dict):
            raise ValueError(f"{path}: expected a single top-level key 'categories' mapping names to members")
        names = list(doc["categories"])
        members: dict[str, dict[str, list[int]]] = {space: {} for space in label_names}
        parents: dict[str, str] = {}
        independent: set[str] = set()
        links: dict[str, dict[str, float]] = {}
        for cat, spaces in doc["categories"].items():
            if not isinstance(spaces, dict) or not set(spaces) - set(_KEYS):
                raise ValueError(f"{path}: category {cat!r} needs at least one label space")
            if spaces.get("evidence", "pooled") not in ("pooled", "independent"):
                raise ValueError(f"{path}: category {cat!r}: evidence must be pooled or independent")
            if spaces.get("evidence") == "independent":
                independent.add(cat)
            if "link" in spaces:
                links[cat] = _links(spaces["link"], {s for s in spaces if s not in _KEYS}, f"{path}: category {cat!r}")
            if "parent" in spaces:
                parent = spaces["parent"]
                if parent not in names or parent == cat or "parent" in (doc["categories"][parent] or {}):
                    raise ValueError(
                        f"{path}: category {cat!r}: parent {parent!r} must be another category "
                        "of this file without a parent of its own (one level)"
                    )
                parents[cat] = parent
            for space, items in spaces.items():
                if space in _KEYS:
                    continue
                if space in known and space not in label_names:
                    continue
                if space not in label_names:
                    raise ValueError(
                        f"{path}: category {cat!r}: unknown label space {space!r} "
                        f"(known: {', '.join(sorted({*label_names, *known}))})"
                    )
                members[space][cat] = _resolve(items, label_names[space], f"{path}: category {cat!r}: {space}")
        return cls(names, members, str(path), parents, independent, links)

    def projection(self, space: str, num_classes: int) -> np.ndarray:
        """0/1 matrix ``[num_classes, len(names)]``; all-zero columns are categories this space cannot see."""
        m = np.zeros((num_classes, len(self.names)), dtype=np.float32)
        for j, cat in enumerate(self.names):
            m[self.members.get(space, {}).get(cat, []), j] = 1.0
        return m


_KEYS = ("parent", "evidence", "link")  # a category's settings beside its label spaces


def _links(doc: object, spaces: set[str], where: str) -> dict[str, float]:
    """``link: {space: strength}``: strengths in [0, 1], for spaces the category lists."""
    if not isinstance(doc, dict) or not all(
        s in spaces and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for s, v in doc.items()
    ):
        raise ValueError(f"{where}: link must map its own label spaces to strengths between 0 and 1")
    return {s: float(v) for s, v in doc.items()}


def _resolve(items: object, labels: list[str], where: str) -> list[int]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where}: expected a non-empty list")
    index = {name: i for i, name in enumerate(labels)}
    out: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        elif isinstance(item, str) and "-" in item and item.replace("-", "").isdigit():
            lo, hi = (int(x) for x in item.split("-"))
            out.extend(range(lo, hi + 1))
        elif isinstance(item, str) and item in index:
            out.append(index[item])
        else:
            raise ValueError(f"{where}: {item!r} is not a class of this label space")
    bad = [i for i in out if not 0 <= i < len(labels)]
    if bad:
        raise ValueError(f"{where}: index {bad[0]} is out of range 0-{len(labels) - 1}")
    return sorted(set(out))
