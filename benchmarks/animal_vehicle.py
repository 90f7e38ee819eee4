"""Animals and vehicles in the category map: how much of ImageNet they cover, and what real pictures score.

    .venv/bin/python benchmarks/animal_vehicle.py

Frigate's default alerts are person, vehicle and animal. The person comes from the detector; vehicles and
animals from the ImageNet classifier through the category map. Coverage: the share of ImageNet's animal
classes (0-397) and of its 68 vehicle classes that belong to a specific category (dog, car ...) and to the
umbrella `animal` / `vehicle`. Pictures: the shared avpairs farm-animal photos and drawings and vehicle
pictures, classified as one-frame windows (video only), each with the umbrella's fused score and the best
specific category's (all an alert rule had before the umbrellas). Prints a table and writes
benchmarks/results/animal_vehicle.json.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
ANIMALS = ["dog", "wolf_fox", "cat", "big_cat", "bear", "monkey", "chicken", "duck_goose", "bird", "horse", "cattle",
           "pig", "sheep_goat", "insect", "frog", "rodent"]
VEHICLES = ["car", "truck", "bus", "motorcycle", "bicycle", "train", "aircraft", "boat", "emergency_vehicle"]


def coverage(categories) -> dict[str, dict[str, float]]:
    """Share of ImageNet's animal / vehicle classes in a specific category and in the umbrella."""
    members = categories.members["imagenet-1k"]
    vehicle_classes = members["vehicle"]
    out = {}
    for umbrella, specific, classes in (("animal", ANIMALS, range(398)), ("vehicle", VEHICLES, vehicle_classes)):
        in_specific = {i for c in specific for i in members.get(c, [])}
        out[umbrella] = {"classes": len(classes),
                         "in_a_specific_category": round(sum(i in in_specific for i in classes) / len(classes), 3),
                         "in_the_umbrella": round(sum(i in members[umbrella] for i in classes) / len(classes), 3)}
    return out


def pictures(models) -> list[dict]:
    import cv2

    from streamclf.types import Frame, Window

    rows = [r for r in csv.DictReader(open(DATA / "avpairs" / "pairs.csv"))
            if r["name"].startswith(("farm_", "vehicle_"))]
    windows = []
    for r in rows:
        img = cv2.cvtColor(cv2.imread(str(DATA / "avpairs" / r["image"])), cv2.COLOR_BGR2RGB)
        scale = 256 / min(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        windows.append(Window(r["name"], 0, 0.0, 2.0, [Frame(r["name"], 0.0, img)], None))
    index = {c: j for j, c in enumerate(models.names)}
    out = []
    for r, scored in zip(rows, models.process(windows)):
        umbrella, family = ("vehicle", VEHICLES) if r["name"].startswith("vehicle_") else ("animal", ANIMALS)
        scores = scored.fused.scores
        best = max(family, key=lambda c: scores[index[c]])
        out.append({"name": r["name"], "umbrella": umbrella, "umbrella_score": round(float(scores[index[umbrella]]), 3),
                    "best_specific": best, "best_specific_score": round(float(scores[index[best]]), 3),
                    "top": models.names[int(np.argmax(scores))]})
    return out


def main() -> None:
    from streamclf import load_config
    from streamclf.encoders import MODELS
    from streamclf.fusion.categories import BUILTIN, CategoryMap
    from streamclf.pipeline import Models

    models = Models(load_config(**{"audio.enabled": False, "detector.enabled": False}))
    labels = {e.meta["label_space"]: e.meta["categories"] for e in models.encoders.values()}
    cover = coverage(CategoryMap.load(BUILTIN, labels, {e.weights.meta["label_space"] for e in MODELS.values()}))
    pics = pictures(models)
    for umbrella, c in cover.items():
        print(f"{umbrella}: {c['classes']} ImageNet classes, {c['in_a_specific_category']:.0%} in a specific category, "
              f"{c['in_the_umbrella']:.0%} in '{umbrella}'")
    print(f"{'picture':<24} {'umbrella':>14} {'best specific':>24} {'top category':>16}")
    for p in pics:
        print(f"{p['name']:<24} {p['umbrella']:>8} {p['umbrella_score']:.2f} "
              f"{p['best_specific']:>17} {p['best_specific_score']:.2f} {p['top']:>16}")
    summary = {}
    for kind in ("photo", "drawing", "vehicle"):
        group = [p for p in pics if (kind in p["name"] if kind != "vehicle" else p["umbrella"] == "vehicle")]
        summary[kind] = {"pictures": len(group),
                         "umbrella_at_0.5": sum(p["umbrella_score"] >= 0.5 for p in group),
                         "best_specific_at_0.5": sum(p["best_specific_score"] >= 0.5 for p in group)}
        print(f"{kind}s: {summary[kind]['umbrella_at_0.5']}/{len(group)} reach 0.5 on the umbrella, "
              f"{summary[kind]['best_specific_at_0.5']}/{len(group)} on the best specific category")
    out = ROOT / "benchmarks" / "results" / "animal_vehicle.json"
    out.write_text(json.dumps({"coverage": cover, "pictures": pics, "summary": summary}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
