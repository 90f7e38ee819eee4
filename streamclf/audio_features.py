"""Time-structured audio features a trained head adds to the pooled audio embedding.

Why: a window's audio embedding is the mean of frozen YAMNet patch
embeddings, which keeps *what kind of sound* it is but drops the order of
events inside the window and carries the speaker's voice and loudness; a
head trained on a few speakers then cannot tell "one" from "nine" said by
someone new (36 % leave-one-speaker-out on FSDD, 12-25 % on streams). These
features describe the *shape* of the loudest sound in the window instead:
MFCCs (standard 13, 25 ms / 10 ms frames) over its active region (frames
within ``ACTIVE_DB`` of the loudest), with c0 (level) dropped from the
averages and every cepstrum taken relative to the region's own mean, so
loudness and a fixed channel cancel; the region is cut into ``SEGMENTS``
equal parts whose means give the order of events. They are cheap (numpy, a
few hundred microseconds a window) and general: nothing in them knows about
digits or speech.

A head trained with them says so in its card (``audio_features``), and the
pipeline appends them to the audio embedding of every window for that head
only; heads without the key get the plain embedding, as before.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .types import SAMPLE_RATE

AUDIO_SHAPE = "mfcc-shape-v1"  # the one recipe; bump the name when the numbers it makes change
FEATURES = (AUDIO_SHAPE,)
N_FFT, HOP, N_MELS, N_MFCC = 400, 160, 40, 13
SEGMENTS = 3
ACTIVE_DB = 30.0
FLOOR = 1e-10  # power floor: digital silence is ~ -100 dB, the bottom of the level feature
RANGE_DB = 80.0  # band energies more than this below the window's loudest band count as that floor


def check(name: str | None) -> str | None:
    """``name`` if it is a known audio-feature recipe (or None); a head card with another one is refused."""
    if name is not None and name not in FEATURES:
        raise ValueError(
            f"unknown audio features {name!r} (this version knows {', '.join(FEATURES)}); "
            "the head was made by a newer streamclf"
        )
    return name


def size(name: str | None) -> int:
    """How many numbers ``name`` appends to the audio embedding (0 for None)."""
    if check(name) is None:
        return 0
    return (N_MFCC - 1) + SEGMENTS * N_MFCC + 2 * N_MFCC + 2


@lru_cache(maxsize=1)
def _mel_dct() -> tuple[np.ndarray, np.ndarray]:
    """Mel filterbank [mels, bins] and DCT-II basis [mfcc, mels]: power spectrum -> (via log) MFCC."""
    import librosa
    from scipy.fft import dct

    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=60.0, fmax=7600.0).astype(np.float32)
    basis = dct(np.eye(N_MELS, dtype=np.float32), axis=0, norm="ortho")[:N_MFCC]
    return mel, basis


def audio_shape(samples: np.ndarray) -> np.ndarray:
    """``size(AUDIO_SHAPE)`` float32 numbers describing the loudest sound in a window of 16 kHz mono samples.

    Layout: mean MFCC c1..c12 of the active region; per segment, the mean
    MFCC c0..c12 minus the region mean; the std and the mean absolute
    frame-to-frame change of c0..c12; log of the region's length in frames;
    the loudest frame's level in dB / 100 (so a silent window is recognisable).
    """
    x = np.asarray(samples, np.float32).reshape(-1)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, F]
    mel, basis = _mel_dct()
    bands = power @ mel.T
    # floor relative to the loudest band (RANGE_DB below it), so scaling the input only shifts c0
    mfcc = np.log(np.maximum(bands, max(bands.max(), FLOOR) * 10 ** (-RANGE_DB / 10))) @ basis.T  # [T, N_MFCC]
    level = 10 * np.log10(np.maximum(power.sum(1) / N_FFT, FLOOR))
    active = np.flatnonzero(level >= level.max() - ACTIVE_DB)
    region = mfcc[active[0] : active[-1] + 1]
    mean = region.mean(0)
    segments = [part.mean(0) - mean for part in np.array_split(region, SEGMENTS) if len(part)]
    segments += [np.zeros(N_MFCC, np.float32)] * (SEGMENTS - len(segments))
    change = np.abs(np.diff(region, axis=0)).mean(0) if len(region) > 1 else np.zeros(N_MFCC, np.float32)
    out = np.concatenate([mean[1:], *segments, region.std(0), change, [np.log(len(region)), level.max() / 100.0]])
    return out.astype(np.float32)


def compute(name: str | None, samples: np.ndarray) -> np.ndarray:
    """The features of recipe ``name`` for one window's audio (empty for None)."""
    if check(name) is None:
        return np.zeros(0, np.float32)
    return audio_shape(samples)
