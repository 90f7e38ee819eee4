"""Animals and vehicles in the category map: how much of ImageNet they cover, and what real pictures score.

    .venv/bin/python benchmarks/animal_vehicle.py

Frigate's usual alerts are a person, vehicles (car, truck, bus, motorcycle, bicycle ...) and animals (dog,
cat, bird, horse ...). The person comes from the detector; vehicles and animals from the ImageNet classifier
through the category map. Coverage: the share of ImageNet's animal classes (0-397) and of its 68 vehicle
classes that belong to one of the map's animal / vehicle categories (each class to one category at most, so
a dog stays `dog`). Pictures: the shared avpairs farm-animal photos and drawings and vehicle pictures,
classified as one-frame windows (video only): the expected category's fused score and the top category.
Prints a table and writes benchmarks/results/animal_vehicle.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
ANIMALS = [
    "dog",
    "wolf_fox",
    "cat",
    "big_cat",
    "bear",
    "monkey",
    "wild_animal",
    "chicken",
    "duck_goose",
    "bird",
    "horse",
    "cattle",
    "pig",
    "sheep_goat",
    "insect",
    "frog",
    "reptile",
    "sea_life",
    "rodent",
]
VEHICLES = ["car", "truck", "bus", "motorcycle", "bicycle", "train", "aircraft", "boat", "emergency_vehicle"]
VEHICLE_CLASSES = [
    403,
    404,
    405,
    407,
    408,
    436,
    444,
    466,
    468,
    472,
    479,
    484,
    510,
    511,
    547,
    554,
    555,
    561,
    565,
    569,
    573,
    575,
    576,
    581,
    586,
    595,
    603,
    609,
    612,
    625,
    627,
    628,
    654,
    656,
    661,
    665,
    670,
    671,
    675,
    690,
    694,
    705,
    717,
    724,
    734,
    751,
    757,
    779,
    780,
    802,
    803,
    812,
    814,
    817,
    820,
    829,
    833,
    847,
    864,
    866,
    867,
    870,
    871,
    874,
    880,
    895,
    908,
    914,
]  # ImageNet's vehicles: aircraft carrier .. yawl
EXPECTED = {
    "horse": "horse",
    "chicken": "chicken",
    "cow": "cattle",
    "cat": "cat",
    "pig": "pig",
    "duck": "duck_goose",
    "owl": "bird",
    "dog": "dog",
    "sheep": "sheep_goat",
    "steam_train": "train",
    "car": "car",
}


def coverage(categories) -> dict[str, dict[str, float]]:
    """Share of ImageNet's animal / vehicle classes that one of the map's animal / vehicle categories holds."""
    members = categories.members["imagenet-1k"]
    out = {}
    for kind, names, classes in (("animal", ANIMALS, range(398)), ("vehicle", VEHICLES, VEHICLE_CLASSES)):
        held = {i for c in names for i in members.get(c, [])}
        out[kind] = {"classes": len(classes), "covered": round(sum(i in held for i in classes) / len(classes), 3)}
    return out


def pictures(models) -> list[dict]:
    import cv2

    from streamclf.types import Frame, Window

    rows = [
        r for r in csv.DictReader(open(DATA / "avpairs" / "pairs.csv")) if r["name"].startswith(("farm_", "vehicle_"))
    ]
    windows = []
    for r in rows:
        img = cv2.cvtColor(cv2.imread(str(DATA / "avpairs" / r["image"])), cv2.COLOR_BGR2RGB)
        scale = 256 / min(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        windows.append(Window(r["name"], 0, 0.0, 2.0, [Frame(r["name"], 0.0, img)], None))
    index = {c: j for j, c in enumerate(models.names)}
    out = []
    for r, scored in zip(
        rows, models.score(windows, {w.source: models.memory(w.source) for w in windows}), strict=True
    ):
        expected = EXPECTED[r["name"].split("_", 1)[1].removesuffix("_photo").removesuffix("_drawing")]
        family = VEHICLES if expected in VEHICLES else ANIMALS
        scores = scored.fused.scores
        top = models.names[int(np.argmax(scores))]
        best = max(family, key=lambda c: scores[index[c]])
        out.append(
            {
                "name": r["name"],
                "expected": expected,
                "score": round(float(scores[index[expected]]), 3),
                "top": top,
                "top_score": round(float(scores.max()), 3),
                "top_of_its_kind": best,
            }
        )
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from streamclf import load_config
    from streamclf.classifier import Classifier
    from streamclf.encoders import MODELS
    from streamclf.fusion.categories import BUILTIN, CategoryMap

    models = Classifier(load_config(**{"audio.enabled": False, "detector.enabled": False}))
    labels = {e.meta["label_space"]: e.meta["categories"] for e in models.encoders.values()}
    cover = coverage(CategoryMap.load(BUILTIN, labels, {e.weights.meta["label_space"] for e in MODELS.values()}))
    pics = pictures(models)
    for kind, c in cover.items():
        print(
            f"{kind}s: {c['covered']:.0%} of ImageNet's {c['classes']} {kind} classes are in one of the map's "
            f"{kind} categories"
        )
    print(f"{'picture':<24} {'expected':>12} {'score':>6} {'top category':>16} {'score':>6} {'top of its kind':>16}")
    for p in pics:
        print(
            f"{p['name']:<24} {p['expected']:>12} {p['score']:>6.2f} {p['top']:>16} {p['top_score']:>6.2f} "
            f"{p['top_of_its_kind']:>16}"
        )
    summary = {}
    for kind in ("photo", "drawing", "vehicle"):
        group = [p for p in pics if (kind in p["name"] if kind != "vehicle" else p["name"].startswith("vehicle_"))]
        summary[kind] = {
            "pictures": len(group),
            "expected_is_top": sum(p["top"] == p["expected"] for p in group),
            "expected_at_0.5": sum(p["score"] >= 0.5 for p in group),
            "top_of_its_kind": sum(p["top_of_its_kind"] == p["expected"] for p in group),
        }
        print(
            f"{kind}s: the expected category is the top one for {summary[kind]['expected_is_top']}/{len(group)}, "
            f"reaches 0.5 for {summary[kind]['expected_at_0.5']}, is the top {kind if kind == 'vehicle' else 'animal'} "
            f"category for {summary[kind]['top_of_its_kind']}"
        )
    out = ROOT / "benchmarks" / "results" / "animal_vehicle.json"
    out.write_text(json.dumps({"coverage": cover, "pictures": pics, "summary": summary}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
