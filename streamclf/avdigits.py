"""AV-digits: an AV-MNIST-style benchmark built from real data at hand.

Handwritten digits (scikit-learn's 8x8 digits, 1797 images from 43 writers)
paired by label with spoken digits (FSDD, 2000 recordings, 4 speakers).
Embeddings come from the project's frozen encoders on exactly the pixels and
samples a live window would hold: ``render_digit`` draws the frame and
``slot_audio`` centres the utterance in a 1 s slot, and the stream composer
uses the same two functions. Embeddings are cached on disk by content.

One module of about 400 lines on purpose: rendering, slotting, noise, the
embedding cache and the stream and clip writers are one data set, and the
writers must draw frames and slots exactly as the embeddings did; split, a
change to one half could silently stop matching the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from .atomic import replacing
from .encoders import Encoder, cache_dir, pick_device
from .sources import read_audio
from .types import SAMPLE_RATE

log = logging.getLogger(__name__)

RECIPE = "avdigits-v1"  # bump when rendering, slotting or noise changes
AUDIO_CONDITIONS = {"clean": None, "snr10": 10.0, "snr0": 0.0, "snr-5": -5.0}
# Gaussian noise sigma in grey levels (of 255) and the occluded fraction of the frame: a mild and a
# heavy level each (mild noise alone already halves what a frozen ImageNet encoder sees in a digit).
IMAGE_CONDITIONS: dict[str, tuple[str, float] | None] = {
    "clean": None,
    "gauss": ("gauss", 80.0),
    "occlude": ("occlude", 0.4),
    "gauss10": ("gauss", 10.0),
    "occlude10": ("occlude", 0.1),
}
FOLDS = 4


def default_data_dir() -> Path:
    return Path(os.environ.get("STREAMCLF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def render_digit(image8x8: np.ndarray, size: int = 224) -> np.ndarray:
    """Dark ink on white paper with a small margin, smoothly upscaled: what a camera on a page would see."""
    ink = np.asarray(image8x8, np.float32).reshape(8, 8) / 16.0
    paper = np.pad(255.0 * (1.0 - ink), 2, constant_values=255.0)
    big = cv2.resize(paper, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.repeat(np.clip(big, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def slot_audio(wave: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """The utterance centred in a slot of silence (cut centrally if longer)."""
    n = int(round(seconds * SAMPLE_RATE))
    wave = np.asarray(wave, np.float32)
    if len(wave) > n:
        start = (len(wave) - n) // 2
        return wave[start : start + n].copy()
    out = np.zeros(n, np.float32)
    start = (n - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator, seconds: float = 1.0
) -> np.ndarray:
    """Slot the utterance and add background noise over the whole slot.

    The SNR is speech power over the utterance itself (not the silent
    padding) to noise power, so "0 dB" means as loud as the speaker.
    """
    slot = slot_audio(speech, seconds)
    n = len(slot)
    reps = int(np.ceil((n + len(noise)) / max(len(noise), 1)))
    looped = np.tile(noise, reps)
    start = int(rng.integers(0, max(len(noise), 1)))
    bg = looped[start : start + n].astype(np.float64)
    p_speech = float(np.mean(np.asarray(speech, np.float64) ** 2))
    p_noise = float(np.mean(bg**2)) or 1e-12
    bg *= np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (slot + bg).astype(np.float32)


def gaussian_noise(frame: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def occlude(frame: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A grey square covering ``fraction`` of the frame at a random place."""
    h, w = frame.shape[:2]
    side = int(round(np.sqrt(fraction * h * w)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = frame.copy()
    out[y : y + side, x : x + side] = 128
    return out


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(":".join(map(str, key)).encode()))


def noises(data_dir: Path) -> list[tuple[str, np.ndarray]]:
    """Real background sounds from ``sounds/`` (files that fail to decode are skipped)."""
    out = []
    for p in sorted((data_dir / "sounds").rglob("*")):
        if p.suffix.lower() in (".wav", ".mp3", ".ogg", ".oga", ".flac"):
            try:
                wave = read_audio(p)
            except ValueError:
                continue
            if len(wave) >= SAMPLE_RATE // 10 and np.abs(wave).max() > 1e-3:
                out.append((str(p.relative_to(data_dir)), wave))
    return out


@dataclass
class AVDigits:
    audio: dict[str, np.ndarray]  # condition -> [Na, D] YAMNet embeddings (mean over patches)
    audio_label: np.ndarray
    audio_speaker: np.ndarray
    audio_path: list[str]
    image: dict[str, np.ndarray]  # condition -> [Ni, D] EfficientNet-Lite0 embeddings
    image_label: np.ndarray
    image_fold: np.ndarray  # disjoint, label-stratified folds 0..FOLDS-1
    speakers: list[str]


def fsdd_files(data_dir: Path) -> list[Path]:
    root = data_dir / "fsdd"
    files = sorted(root.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{root}: no FSDD wav files (set STREAMCLF_SHARED_DATA to the shared data folder)")
    return files


def image_folds(labels: np.ndarray) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    folds = np.zeros(len(labels), np.int64)
    for k, (_, test) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(labels, labels)):
        folds[test] = k
    return folds


def _cached(name: str, key: str, build: Any, progress: bool) -> np.ndarray:
    path = cache_dir() / "avdigits" / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    if progress:
        log.info("avdigits: embedding %s (cached after this run)", name)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        np.save(tmp, value)
    return value


def load_avdigits(
    data_dir: Path | None = None, device: str = "auto", progress: bool = True, batch: int = 64
) -> AVDigits:
    """Embeddings of every FSDD utterance and digit image under every condition (cached)."""
    from sklearn.datasets import load_digits

    data_dir = data_dir or default_data_dir()
    files = fsdd_files(data_dir)
    digits = load_digits()
    dev = pick_device(device)
    encoders: dict[str, Encoder] = {}

    def encoder(name: str) -> Encoder:
        if name not in encoders:
            encoders[name] = Encoder(name, dev)
        return encoders[name]

    from .encoders import MODELS

    audio_id, video_id = MODELS["yamnet"].weights.id, MODELS["efficientnet_lite0"].weights.id
    audio_key = hashlib.sha1(b"".join(hashlib.sha1(p.read_bytes()).digest() for p in files)).hexdigest()
    image_key = hashlib.sha1(digits.images.astype(np.float32).tobytes()).hexdigest()
    background: list[tuple[str, np.ndarray]] = []

    def embed_audio(cond: str) -> np.ndarray:
        nonlocal background
        waves = [read_audio(p) for p in files]
        snr = AUDIO_CONDITIONS[cond]
        if snr is not None:
            background = background or noises(data_dir)
            slots = []
            for i, w in enumerate(waves):
                rng = _rng(cond, i)
                slots.append(mix_at_snr(w, background[int(rng.integers(len(background)))][1], snr, rng))
        else:
            slots = [slot_audio(w) for w in waves]
        outs = encoder("yamnet").embed(slots)
        return np.stack([e.mean(0) for e, _ in outs]).astype(np.float32)

    def embed_images(cond: str) -> np.ndarray:
        frames = []
        for i, img in enumerate(digits.images):
            f = render_digit(img)
            corruption = IMAGE_CONDITIONS[cond]
            if corruption is not None:
                kind, level = corruption
                f = (gaussian_noise if kind == "gauss" else occlude)(f, level, _rng(cond, i))
            frames.append(f)
        out = []
        for s in range(0, len(frames), batch):
            ((emb, _),) = encoder("efficientnet_lite0").embed([np.stack(frames[s : s + batch])])
            out.append(emb)
        return np.concatenate(out).astype(np.float32)

    noise_key = ""
    if any(v is not None for v in AUDIO_CONDITIONS.values()):
        noise_key = ",".join(
            p.name + str(p.stat().st_size) for p in sorted((data_dir / "sounds").rglob("*")) if p.is_file()
        )
    audio = {
        c: _cached(
            f"audio-{c}",
            f"{RECIPE}|{audio_id}|{audio_key}|{c}|{noise_key if c != 'clean' else ''}",
            lambda c=c: embed_audio(c),
            progress,
        )
        for c in AUDIO_CONDITIONS
    }
    image = {
        c: _cached(f"image-{c}", f"{RECIPE}|{video_id}|{image_key}|{c}", lambda c=c: embed_images(c), progress)
        for c in IMAGE_CONDITIONS
    }
    parts = [p.stem.split("_") for p in files]
    speakers = sorted({sp for _, sp, _ in parts})
    return AVDigits(
        audio,
        np.array([int(d) for d, _, _ in parts]),
        np.array([sp for _, sp, _ in parts]),
        [p.name for p in files],
        image,
        digits.target.astype(np.int64),
        image_folds(digits.target),
        speakers,
    )


def compose_stream(
    out: Path,
    digits: list[int],
    speaker: str,
    data_dir: Path | None = None,
    seconds_per_digit: float = 1.0,
    seed: int = 0,
    image_pool: np.ndarray | None = None,
    fps: int = 10,
) -> dict[str, Any]:
    """An MP4 showing one digit image per slot while ``speaker`` says it; ground truth JSON beside it.

    ``image_pool`` restricts which scikit-learn digit images may appear
    (e.g. a held-out fold), so the stream tests generalisation.
    """
    from sklearn.datasets import load_digits

    data_dir = data_dir or default_data_dir()
    files = [p for p in fsdd_files(data_dir) if p.stem.split("_")[1] == speaker]
    if not files:
        raise ValueError(f"no FSDD recordings of speaker {speaker!r} in {data_dir / 'fsdd'}")
    images = load_digits()
    pool = np.arange(len(images.target)) if image_pool is None else np.asarray(image_pool)
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    segments, audio_parts, frames = [], [], []
    for k, d in enumerate(digits):
        said = [p for p in files if p.stem.split("_")[0] == str(d)]
        shown = pool[images.target[pool] == d]
        if not said or not len(shown):
            raise ValueError(f"no recording or image of digit {d} for speaker {speaker!r} in the pool")
        wav, img = said[int(rng.integers(len(said)))], int(rng.choice(shown))
        audio_parts.append(slot_audio(read_audio(wav), seconds_per_digit))
        frames.append(render_digit(images.images[img]))
        segments.append(
            {
                "start": round(k * seconds_per_digit, 6),
                "end": round((k + 1) * seconds_per_digit, 6),
                "label": str(d),
                "image": img,
                "audio": wav.name,
            }
        )
    with av.open(str(out), "w") as container:
        v = container.add_stream("libx264", rate=fps)
        v.width = v.height = frames[0].shape[0]
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "18", "preset": "veryfast"}
        a = container.add_stream("aac", rate=SAMPLE_RATE)
        a.layout = "mono"
        per_slot = int(round(seconds_per_digit * fps))
        for k, f in enumerate(frames):
            for j in range(per_slot):
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts, vf.time_base = k * per_slot + j, Fraction(1, fps)
                container.mux(v.encode(vf))
        samples = np.concatenate(audio_parts)
        step = 1024
        for s in range(0, len(samples), step):
            af = av.AudioFrame.from_ndarray(samples[None, s : s + step], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, s, Fraction(1, SAMPLE_RATE)
            container.mux(a.encode(af))
        container.mux(v.encode(None))
        container.mux(a.encode(None))
    timeline = {"segments": segments, "speaker": speaker, "seconds_per_digit": seconds_per_digit, "video": out.name}
    out.with_suffix(".json").write_text(json.dumps(timeline, indent=1))
    return timeline


def segment_accuracy(records: list[dict[str, Any]], timeline: dict[str, Any]) -> dict[str, Any]:
    """Per-segment accuracy: the top label of each window lying inside a segment, against its digit."""
    hits, total, misses = 0, 0, []
    windows = [r for r in records if "labels" in r and r.get("type") is None]
    for seg in timeline["segments"]:
        inside = [r for r in windows if r["t_start"] >= seg["start"] - 1e-6 and r["t_end"] <= seg["end"] + 1e-6]
        for r in inside:
            total += 1
            if r["labels"][0]["label"] == seg["label"]:
                hits += 1
            else:
                misses.append((seg["start"], seg["label"], r["labels"][0]["label"]))
    return {"accuracy": hits / total if total else float("nan"), "windows": total, "misses": misses}


def write_clips(
    out_dir: str | Path,
    speakers: list[str],
    per_digit: int,
    image_pool: np.ndarray | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    seconds: tuple[float, float] = (1.0, 2.0),
    digits: range = range(10),
    snr_db: float | None = None,
) -> list[Path]:
    """AV-digits as media a user could record: ``out_dir/<digit>/<speaker>/<name>.mp4``, one digit per clip.

    Each clip shows one handwritten digit (from ``image_pool``) while the
    speaker says it at their natural loudness, and lasts a random 1-2 s
    (``seconds``), so ``train --group`` can hold out whole speakers and
    ``eval --compose`` can play the clips as a stream. ``snr_db``: a real
    background sound from ``sounds/`` plays under the whole clip at that SNR
    (``mix_at_snr``; the same clips, images and lengths as without it, for a
    clean-vs-noise comparison). Existing clips are kept.
    """
    from scipy.io import wavfile
    from sklearn.datasets import load_digits

    from .clips import pair_clip

    data_dir = data_dir or default_data_dir()
    images = load_digits()
    pool = np.arange(len(images.target)) if image_pool is None else np.asarray(image_pool)
    out_dir = Path(out_dir)
    background = noises(data_dir) if snr_db is not None else []
    if snr_db is not None and not background:
        raise ValueError(f"{data_dir / 'sounds'}: no background sounds to mix at {snr_db:g} dB")
    made = []
    for speaker in speakers:
        rng = _rng("clips", speaker, seed)
        files = [p for p in fsdd_files(data_dir) if p.stem.split("_")[1] == speaker]
        for d in digits:
            said = [p for p in files if p.stem.split("_")[0] == str(d)]
            shown = pool[images.target[pool] == d]
            if not said or not len(shown):
                raise ValueError(f"no recording or image of digit {d} for speaker {speaker!r} in the pool")
            for wav in sorted(said[int(j)] for j in rng.choice(len(said), min(per_digit, len(said)), replace=False)):
                img, length = int(rng.choice(shown)), float(rng.uniform(*seconds))  # drawn even when kept
                clip = out_dir / str(d) / speaker / f"{wav.stem}_img{img}.mp4"
                if not clip.exists():
                    clip.parent.mkdir(parents=True, exist_ok=True)
                    png, sound = clip.with_suffix(".png"), wav
                    cv2.imwrite(str(png), render_digit(images.images[img]))
                    if snr_db is not None:  # background sounds were found (checked above)
                        mix = _rng("noise", clip.name, snr_db)
                        noisy = mix_at_snr(
                            read_audio(wav),
                            background[int(mix.integers(len(background)))][1],
                            snr_db,
                            mix,
                            seconds=length,
                        )
                        sound = clip.with_suffix(".wav")
                        wavfile.write(sound, SAMPLE_RATE, noisy)
                    pair_clip(png, sound, clip, min_seconds=length, max_seconds=seconds[1])
                    png.unlink()
                    if sound != wav:
                        sound.unlink()
                made.append(clip)
    return made
