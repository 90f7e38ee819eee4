"""The config a run really uses: what the models dictate, applied once before anything is built.

Three settings are not the user's to choose freely: a trained head was
trained with one window and one pooling (its card says which); a clip video
encoder reads a fixed number of frames at a fixed rate (the window becomes
that clip unless ``window.adapt`` is off); and the decoder scales frames to
the short side the video encoder reads (``window.short_side`` null). Every
entry point (``run``, ``label``, ``eval``, ``train``, ``calibrate`` and the
Python API) calls ``resolve_config`` first and builds everything from what it
returns, so the decoder, the windows, the classifier and the resume key all
see the same settings. It reads the encoders' meta from their weights enums
and the head's card, never any weights, and it is idempotent: resolving a
resolved config changes nothing (and says nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from .catalog import head_card
from .config import Config
from .types import MODALITIES

log = logging.getLogger(__name__)


def resolve_config(config: Config) -> Config:
    """``config`` with the head card's window and pooling, the clip encoder's window and the encoder's short side."""
    return _short_side(_fit_clip(_head(config)))


def encoder_names(config: Config) -> dict[str, str]:
    """The encoder of each enabled modality, and of the speech gate when it is on (by itself for speech rules)."""
    wanted = {m: getattr(config, m).encoder for m in MODALITIES if getattr(config, m).enabled}
    if config.speech.enabled or any(r.speech for r in config.alerts.rules):
        wanted["speech"] = config.speech.encoder
    return wanted


def _video_meta(config: Config) -> dict[str, Any]:
    """The enabled video encoder's meta (from its weights enum, no weights loaded); {} when off or unknown
    (building the encoder then says what is wrong with the name)."""
    if not config.video.enabled:
        return {}
    from .encoders import MODELS

    entry = MODELS.get(config.video.encoder)
    return entry.weights.meta if entry is not None else {}


def _head(config: Config) -> Config:
    """A trained head dictates the window and pooling it was trained with."""
    if not config.fusion.head:
        return config
    card = head_card(config.fusion.head)
    if card is None:  # loading the head says what is wrong with the folder
        return config
    update: dict[str, Any] = {}
    if card.window is not None:
        update["window"] = card.window
    for m, pool in card.pool.items():
        update[m] = getattr(config, m).model_copy(update={"pool": pool})
    return config.model_copy(update=update)


def _fit_clip(config: Config) -> Config:
    """A clip video encoder reads T frames at its own rate: the window becomes that clip, and says so."""
    clip = _video_meta(config).get("clip")
    w = config.window
    if clip is None or not w.adapt:
        return config
    length = round(clip["frames"] / clip["fps"], 3)
    update = {
        k: v for k, v in {"fps": clip["fps"], "length": length, "hop": min(w.hop, length)}.items() if getattr(w, k) != v
    }
    if not update:
        return config
    changes = ", ".join(f"{k} {getattr(w, k):g} -> {v:g}" for k, v in update.items())
    log.warning(
        "%s reads clips of %s frames at %g fps: window %s (window.adapt: false keeps yours)",
        config.video.encoder,
        clip["frames"],
        clip["fps"],
        changes,
    )
    return config.model_copy(update={"window": w.model_copy(update=update)})


def _short_side(config: Config) -> Config:
    """FFmpeg's scaler in the decoder thread resizes frames to the side the video encoder reads."""
    side = _video_meta(config).get("resize")
    if config.window.short_side is not None or not side:
        return config
    return config.model_copy(update={"window": config.window.model_copy(update={"short_side": side})})
