"""Streaming checks of AV-digits heads on composed streams of speakers and images they never saw.

    .venv/bin/python benchmarks/avdigits_stream.py [--streams 3] [--digits 20]
    .venv/bin/python benchmarks/avdigits_stream.py --held-out-speakers [--per-digit 16] [--work DIR] [--no-augment]
        [--fusion gated] [--audio-features mfcc-shape-v1|none] [--noise-snr 0] [--no-removed]

Default: the shipped heads (models/heads/avdigits*), `streamclf run` over composed MP4s of their held-out
speaker, windows inside a digit's slot scored against the timeline (key "shipped_head" in the JSON).

``--held-out-speakers``: for each FSDD speaker in turn, a head trained with `streamclf train --group`
(speakers as groups, the train verb's own augmentation unless --no-augment: gains, degraded copies with
generated noise or damaged frames, blanks) on clips of the other three speakers and three image folds,
then `streamclf eval --compose --gap 0.5` on 100 clips of the held-out speaker (10 per digit, natural
loudness, 1-2 s each) with the fourth image fold: fused / audio-only / video-only, next to the stream
figure `train` itself reported (every training speaker held out in turn, pooled; per fold under
"train_reported_folds"); then the same stream with a real background sound from sounds/ under every clip at
--noise-snr dB (speech power over the utterance to noise power): fused and audio-only (video-only is the
clean run's: with the audio track removed the two streams are the same). Unless --no-removed, a modality
removed at run time: unimodal heads (`train --fusion audio|video`, same clips and augmentation) on the
stream with the other track stripped, beside the fused head on the same stripped stream. Key
"held_out_speakers/<fusion>+<audio features>[/noise-copies-generated]" (the first run, gated on the pooled
YAMNet embedding alone and without the noise stream, is kept under "held_out_speakers"; runs before the
degraded copies have no "/noise-copies" suffix). Clips, embeddings and training streams are cached (--work,
the user cache); timings are recorded.
Writes benchmarks/results/avdigits_stream.json (other keys are kept).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from streamclf import load_config, run
from streamclf.audio_features import AUDIO_SHAPE, FEATURES
from streamclf.avdigits import compose_stream, image_folds, segment_accuracy, write_clips
from streamclf.catalog import FUSION_FAMILIES
from streamclf.head_card import HeadCard
from streamclf.train import AVDIGITS_WINDOW, FOLDER_GROUP, train
from streamclf.trainset import STREAM_GAP

ROOT = Path(__file__).resolve().parents[1]
HEADS = {"fused": "avdigits", "audio only": "avdigits-audio", "video only": "avdigits-video"}
SPEAKERS = ["george", "jackson", "nicolas", "yweweler"]
RUNS = ("fused", "audio only", "video only")


def shipped_heads(streams: int, digits: int) -> dict:
    metrics = HeadCard.read(ROOT / "models" / "heads" / "avdigits").metrics
    speaker, fold = metrics["held_out_speaker"], metrics["held_out_image_fold"]
    pool = np.flatnonzero(image_folds(load_digits().target) == fold)
    results: dict[str, list[float]] = {k: [] for k in HEADS}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(streams):
            digit_list = [int(d) for d in np.random.default_rng(100 + s).integers(0, 10, digits)]
            stream = Path(tmp) / f"stream{s}.mp4"
            timeline = compose_stream(stream, digit_list, speaker, image_pool=pool, seed=s)
            for name, head in HEADS.items():
                out = Path(tmp) / f"{s}-{head}.jsonl"
                run(
                    [str(stream)],
                    out=out,
                    config=load_config(
                        **{"fusion.head": str(ROOT / "models" / "heads" / head), "fusion.smoothing": 1.0}
                    ),
                )
                records = [json.loads(line) for line in out.read_text().splitlines()]
                results[name].append(segment_accuracy(records, timeline)["accuracy"])
    print(f"{'head':12s} {'accuracy (mean over streams)':>30s}  per stream")
    for name, accs in results.items():
        print(f"{name:12s} {np.mean(accs):30.3f}  {' '.join(f'{a:.3f}' for a in accs)}")
    return {
        "speaker": speaker,
        "image_fold": fold,
        "streams": streams,
        "digits_per_stream": digits,
        "accuracy": results,
    }


def held_out_speakers(
    work: Path,
    per_digit: int,
    augment: bool,
    fusion: str,
    speakers: list[str],
    audio_features: str | None,
    snr: float | None,
    removed: bool = True,
) -> dict:
    """Train on three speakers with `train --group`, evaluate a composed stream of the fourth, clean and noisy.

    ``removed``: also the one-encoder systems of ``one_encoder_systems``.
    """
    from streamclf.evaluate import evaluate

    folds = image_folds(load_digits().target)
    config = load_config(window=AVDIGITS_WINDOW, **{"audio.pool": "mean", "video.pool": "mean"})
    rows = {}
    for speaker in speakers:
        k = SPEAKERS.index(speaker)
        started = time.monotonic()
        test, train_dir = work / speaker / "test", work / speaker / "train"
        write_clips(test, [speaker], 10, np.flatnonzero(folds == k))
        write_clips(train_dir, [s for s in SPEAKERS if s != speaker], per_digit, np.flatnonzero(folds != k))
        name = f"head-{fusion}{'' if augment else '-noaug'}{f'-{audio_features}' if audio_features else ''}"
        card = train(
            train_dir,
            fusion,
            work / speaker / name,
            config,
            group=FOLDER_GROUP,
            augment=augment,
            audio_features=audio_features,
            progress=lambda msg: None,
        )
        trained = time.monotonic()
        head = load_config(**{"fusion.head": str(work / speaker / name)})
        clean = evaluate(test, head, compose=True, gap=STREAM_GAP, work_dir=work / speaker / "eval")
        rows[speaker] = {
            "stream": runs(clean),
            "train_reported": {k: v for k, v in card["metrics"]["stream"].items() if k != "folds"},
            "train_reported_folds": card["metrics"]["stream"].get("folds"),
            "train_held_out": card["metrics"]["held_out_groups"],
            "train_windows_held_out": card["metrics"]["accuracy"],
        }
        if removed:
            rows[speaker]["modality_removed"] = one_encoder_systems(
                train_dir, test, work / speaker, config, augment, audio_features, clean
            )
        if snr is not None:
            noisy = work / speaker / f"test-snr{snr:g}"
            write_clips(noisy, [speaker], 10, np.flatnonzero(folds == k), snr_db=snr)
            # the noise is under the sound only: with the audio track removed the noisy stream is the clean one,
            # so its video-only run is the clean video-only run (not run twice)
            rows[speaker]["stream_noise"] = runs(
                evaluate(
                    noisy,
                    head,
                    compose=True,
                    gap=STREAM_GAP,
                    work_dir=work / speaker / "eval-noise",
                    runs=("fused", "audio only"),
                )
            ) | {"video only": rows[speaker]["stream"]["video only"]}
        rows[speaker]["seconds"] = {"train": round(trained - started), "eval": round(time.monotonic() - trained)}
        print(speaker, json.dumps(rows[speaker]), flush=True)
    return {
        "fusion": fusion,
        "audio_features": audio_features,
        "augment": augment,
        "per_digit_train": per_digit,
        "test_clips": 100,
        "gap": STREAM_GAP,
        "noise_snr_db": snr,
        "training_noise": "generated" if augment else None,  # degraded copies (trainset.stream_windows)
        # a feature-level head answers one modality alone with its own unimodal networks (NeuralHead fallback)
        "fallback": FUSION_FAMILIES.get(fusion) == "feature",
        "window": AVDIGITS_WINDOW,
        "speakers": rows,
    }


def runs(result: dict) -> dict:
    return {r: result["runs"][r]["accuracy"] for r in result["runs"]}


def one_encoder_systems(
    train_dir: Path, test: Path, work: Path, config, augment: bool, audio_features: str | None, fused: dict
) -> dict:
    """A modality removed at run time: the fused head on the stream with one track stripped (``fused``'s audio
    only / video only runs) against the system built for the surviving modality alone, a unimodal head
    (`train --fusion audio|video`, same clips and augmentation) on the same stripped stream."""
    from streamclf.evaluate import evaluate

    out = {}
    for modality in ("audio", "video"):
        head = work / f"head-{modality}"
        train(
            train_dir,
            modality,
            head,
            config,
            group=FOLDER_GROUP,
            augment=augment,
            audio_features=audio_features,  # a video head ignores them; the same windows are then cached once
            progress=lambda msg: None,
        )
        kept = f"{modality} only"
        alone = evaluate(
            test,
            load_config(**{"fusion.head": str(head)}),
            compose=True,
            gap=STREAM_GAP,
            work_dir=work / "eval",
            runs=(kept,),
        )
        out[kept] = {"fused head": fused["runs"][kept]["accuracy"], "one-encoder system": runs(alone)[kept]}
    return out


def table(res: dict) -> str:
    noise = res.get("noise_snr_db")
    extra = f" | noise {noise:g} dB: fused / audio / video" if noise is not None else ""
    lines = [
        "| held-out speaker | fused | audio only | video only | fused - best single | train-reported stream "
        f"(its held-out speaker) | train-reported - stream{extra} |",
        "|---|---|---|---|---|---|---|" + "---|" * bool(extra),
    ]
    for speaker, r in res["speakers"].items():
        s, t, n = r["stream"], r["train_reported"], r.get("stream_noise")
        lines.append(
            f"| {speaker} | {100 * s['fused']:.1f} | {100 * s['audio only']:.1f} | {100 * s['video only']:.1f} "
            f"| {100 * (s['fused'] - max(s['audio only'], s['video only'])):+.1f} "
            f"| {100 * t['fused']:.1f} ({', '.join(r['train_held_out'])}) "
            f"| {100 * (t['fused'] - s['fused']):+.1f}"
            + (f" | {' / '.join(f'{100 * n[k]:.0f}' for k in RUNS)}" if n else "")
            + " |"
        )
    return "\n".join(lines)


def removed_table(res: dict) -> str:
    """A modality removed at run time: the fused head on the stream with one track stripped against the
    one-encoder system for the surviving modality on the same stream (target: fused >= alone - 1 pt)."""
    lines = [
        "| held-out speaker | audio stripped: fused head | video-only head | difference "
        "| video stripped: fused head | audio-only head | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for speaker, r in res["speakers"].items():
        m = r.get("modality_removed")
        if not m:
            continue
        cells = []
        for kept in ("video only", "audio only"):
            fused, alone = m[kept]["fused head"], m[kept]["one-encoder system"]
            cells += [f"{100 * fused:.0f}", f"{100 * alone:.0f}", f"{100 * (fused - alone):+.0f}"]
        lines.append(f"| {speaker} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def result_key(res: dict) -> str:
    """Where a run goes in the JSON: one key per method and audio features (and augmentation)."""
    return (
        f"held_out_speakers/{res['fusion']}+{res['audio_features'] or 'none'}{'' if res['augment'] else '/no-augment'}"
        + (f"/noise-copies-{res['training_noise']}" if res.get("training_noise") else "")
        + ("/fallback" if res.get("fallback") else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--digits", type=int, default=20, help="digits per stream (1 s each)")
    ap.add_argument("--held-out-speakers", action="store_true", help="train with `train --group` per held-out speaker")
    ap.add_argument("--speakers", default=",".join(SPEAKERS), help="with --held-out-speakers: which to hold out")
    ap.add_argument("--per-digit", type=int, default=16, help="training clips per digit and speaker")
    ap.add_argument("--fusion", default="gated")
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument(
        "--audio-features",
        default=AUDIO_SHAPE,
        choices=[*FEATURES, "none"],
        help="extra time-structured audio features of the head (train's default) or none",
    )
    ap.add_argument(
        "--noise-snr",
        type=float,
        default=0.0,
        help="SNR (dB) of the background sound under the noisy held-out stream; 'nan' skips it",
    )
    ap.add_argument(
        "--no-removed",
        dest="removed",
        action="store_false",
        help="skip the one-encoder systems (unimodal heads on the stream with a track stripped)",
    )
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "streamclf-avdigits-stream"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "avdigits_stream.json"))
    args = ap.parse_args()
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc = doc if "shipped_head" in doc or "held_out_speakers" in doc else {"shipped_head": doc} if doc else {}
    if args.held_out_speakers:
        features = None if args.audio_features == "none" else args.audio_features
        res = held_out_speakers(
            Path(args.work),
            args.per_digit,
            args.augment,
            args.fusion,
            args.speakers.split(","),
            features,
            None if np.isnan(args.noise_snr) else args.noise_snr,
            args.removed,
        )
        print(table(res))
        print(removed_table(res))
        doc[result_key(res)] = res
    else:
        doc["shipped_head"] = shipped_heads(args.streams, args.digits)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
