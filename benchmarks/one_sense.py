"""One-sense events: real sounds over an unrelated picture keep the score the audio alone gives them.

    .venv/bin/python benchmarks/one_sense.py [--config FILE]

Issue 16's check of "absence of evidence is not evidence of absence": each
real sound of ../shared/data/sounds whose category the map has (``SOUNDS``)
plays 1 s into a stretch of Big Buck Bunny (an animated forest: no dog, no
car, ...; each sound gets its own stretch). The fused score of the sound's
category (highest over the clip's windows, as ``label`` writes it) is compared
with the score the same clip gives with the video encoder off. An event
passes when fused >= 0.9 x audio alone. Writes benchmarks/results/one_sense.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
PICTURE = "media/bbb_360p_60s.mp4"
TARGET = 0.9  # fused >= 0.9 x audio alone
# sound file (under sounds/) -> category-map name; sounds the map has no category for are left out
SOUNDS = {
    "scratch/Animal/Bird.wav": "bird",
    "scratch/Animal/Cat.mp3": "cat",
    "scratch/Animal/Cricket.wav": "insect",
    "scratch/Animal/Crickets.wav": "insect",
    "scratch/Animal/Dog1.wav": "dog",
    "scratch/Animal/Dog2.wav": "dog",
    "scratch/Animal/Duck.wav": "duck_goose",
    "scratch/Animal/Goose.wav": "duck_goose",
    "scratch/Animal/Horse.wav": "horse",
    "scratch/Animal/HorseGallop.wav": "horse",
    "scratch/Animal/Kitten.wav": "cat",
    "scratch/Animal/Meow.wav": "cat",
    "scratch/Animal/Owl.wav": "bird",
    "scratch/Animal/Rooster.wav": "chicken",
    "scratch/Animal/WolfHowl.wav": "wolf_fox",
    "scratch/Effects/BellToll.wav": "bell",
    "scratch/Effects/CarPassing.wav": "car",
    "scratch/Effects/DoorClose.mp3": "door",
    "scratch/Effects/DoorCreak.wav": "door",
    "scratch/Effects/MotorcyclePassing.wav": "motorcycle",
    "scratch/Effects/SewingMachine.mp3": "sewing_machine",
    "scratch/Effects/Typing.mp3": "typing",
    "scratch/Effects/WaterRunning.mp3": "running_water",
    "scratch/Human/BabyCry.mp3": "crying_baby",
    "scratch/Human/Cough-female.wav": "cough_sneeze",
    "scratch/Human/Cough-male.wav": "cough_sneeze",
    "scratch/Human/Footsteps-1.wav": "footsteps",
    "scratch/Human/Footsteps-2.mp3": "footsteps",
    "scratch/Human/Laugh-female.wav": "laughter",
    "scratch/Human/Laugh-male1.wav": "laughter",
    "scratch/Human/Laugh-male2.wav": "laughter",
    "scratch/Human/Laugh-male3.mp3": "laughter",
    "scratch/Human/Scream-female.wav": "shouting",
    "scratch/Human/Scream-male1.wav": "shouting",
    "scratch/Human/Scream-male2.mp3": "shouting",
    "scratch/Human/Sneeze-female.wav": "cough_sneeze",
    "scratch/Human/Sneeze-male.wav": "cough_sneeze",
    "freedesktop/alarm-clock-elapsed.oga": "alarm",
    "freedesktop/bell.oga": "bell",
    "freedesktop/phone-incoming-call.oga": "telephone",
    "freedesktop/phone-outgoing-calling.oga": "telephone",
}


def make_clip(sound: Path, out: Path, offset: float, seconds: float = 6.0) -> Path:
    """``seconds`` of the picture from ``offset`` with ``sound`` starting 1 s in (cut to fit)."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            str(offset),
            "-t",
            str(seconds),
            "-i",
            str(DATA / PICTURE),
            "-i",
            str(sound),
            "-filter_complex",
            f"[1:a]aresample=16000,adelay=1000,apad,atrim=0:{seconds}[a]",
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
    )
    return out


def best(path: Path, models: object, label: str) -> float:
    """The highest score ``label`` gets over the clip's windows (0 outside the records' top labels)."""
    from streamclf.labeling import iter_records

    return max(
        (x["score"] for r in iter_records(path, classifier=models) for x in r["labels"] if x["label"] == label),
        default=0.0,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML config (default: the defaults)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not (DATA / PICTURE).exists():
        sys.exit(f"one_sense: {DATA / PICTURE} not found (the shared media)")
    from streamclf.classifier import Classifier
    from streamclf.config import load_config

    config = load_config(args.config, **{"fusion.top_k": 50})
    both, heard = (
        Classifier(config),
        Classifier(config.model_copy(update={"video": config.video.model_copy(update={"enabled": False})})),
    )
    started, rows = time.monotonic(), []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (rel, label) in enumerate(SOUNDS.items()):
            clip = make_clip(DATA / "sounds" / rel, Path(tmp) / f"{i}.mp4", offset=(7.0 * i) % 50)
            fused, alone = best(clip, both, label), best(clip, heard, label)
            rows.append(
                {
                    "sound": rel,
                    "category": label,
                    "fused": round(fused, 4),
                    "audio_alone": round(alone, 4),
                    "ok": fused >= TARGET * alone,
                }
            )
            print(f"{rel}: {label} fused {fused:.3f} audio alone {alone:.3f}", file=sys.stderr, flush=True)
    ok = sum(r["ok"] for r in rows)
    summary = {
        "events": len(rows),
        "passed": ok,
        "rate": ok / len(rows),
        "target": f"fused >= {TARGET} x audio alone for >= 90 % of events",
        "picture": PICTURE,
        "seconds": round(time.monotonic() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/one_sense.py" + (f" --config {args.config}" if args.config else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "one_sense.json").write_text(json.dumps({"summary": summary, "events": rows}, indent=1) + "\n")
    lines = [
        "# One-sense events: real sounds over Big Buck Bunny",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        f"**{ok}/{len(rows)} events ({100 * ok / len(rows):.0f} %) pass** (target: >= 90 %); "
        f"{summary['date']}, {summary['seconds']:.0f} s; `{summary['command']}`.",
        "",
        "| sound | category | fused | audio alone | pass |",
        "|---|---|---|---|---|",
        *(
            f"| {r['sound']} | {r['category']} | {r['fused']:.3f} | {r['audio_alone']:.3f} | "
            f"{'yes' if r['ok'] else 'no'} |"
            for r in rows
        ),
        "",
    ]
    (args.out / "one_sense.md").write_text("\n".join(lines))
    print(f"{ok}/{len(rows)} pass; wrote {args.out / 'one_sense.md'}")


if __name__ == "__main__":
    main()
