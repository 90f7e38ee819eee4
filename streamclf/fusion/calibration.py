"""Per-modality calibration of zero-shot category scores: a small file with a card.

Summed ImageNet softmax and max AudioSet sigmoid are different scales: 0.4 of
one is not 0.4 of the other, so averaging them lets the louder scale win.
Platt scaling per modality (``p = sigmoid(slope * logit(raw) + bias)``, plus
a bias per category where the fitting data has enough clips of it) turns each
raw score into the probability that the category is really there, which is
what fusion pools. The file records which encoder weights it was fitted for
(scores of other weights mean something else, so it is refused), the pooling
settings it was measured with, and a card saying what data it saw and what
it measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUILTIN = Path(__file__).resolve().parents[1] / "data" / "calibration.yaml"
MIN_CLIPS = 3  # a category gets its own bias only with at least this many clips of it
REGULARISATION = 0.1  # inverse L2 strength of the Platt fit: small data, so stay near the identity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModalityFit(_Strict):
    """``p = sigmoid(slope * logit(raw) + bias + category_bias[category])``."""

    slope: float
    bias: float
    category_bias: dict[str, float] = Field(default_factory=dict)


class Card(_Strict):
    """What the calibration was fitted on and what it measured there (log-loss and ECE, before -> after)."""

    data: list[str]
    clips: int
    windows: int
    categories: list[str]
    measured: dict[str, dict[str, float]]
    note: str = ""


class Calibration(_Strict):
    format: Literal["streamclf-calibration"] = "streamclf-calibration"
    version: Literal[1] = 1
    encoders: dict[str, str] = Field(description="modality -> encoder weights id the scores came from")
    pooling: Literal["average", "loglinear"] = "average"
    sharpness: float = Field(
        4.0,
        ge=0,
        description="reliability = top calibrated score ** sharpness; 4 measured "
        "best on sounds over an unrelated picture (benchmarks/one_sense.py) at equal accuracy",
    )
    modalities: dict[str, ModalityFit]
    links: dict[str, dict[str, Annotated[float, Field(ge=0, le=1)]]] = Field(
        default_factory=dict,
        description="category -> modality -> link strength in [0, 1], replacing the category map's "
        "(how far that modality's evidence goes towards the category; see fusion.categories)",
    )
    card: Card
    path: str = Field("", exclude=True)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read and check a calibration file; every problem is one ValueError naming the file."""
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
            return cls(**doc, path=str(path))
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise ValueError(f"{path}: cannot read calibration: {str(e).splitlines()[0]}") from e
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(
                f"{path}: not a streamclf calibration: {'.'.join(map(str, err['loc']))}: {err['msg']}"
            ) from e

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# streamclf calibration (streamclf calibrate); see the card for what it was fitted on\n"
            + yaml.safe_dump(self.model_dump(), sort_keys=False, width=110)
        )
        return path

    def source(self) -> dict[str, object]:
        """Which file this is and what its card says it was fitted on (what ``eval`` reports with its figures)."""
        return {
            "path": self.path or None,
            "builtin": bool(self.path) and Path(self.path).resolve() == BUILTIN,
            "data": self.card.data,
            "clips": self.card.clips,
            "note": self.card.note,
        }

    def check_encoders(self, weights_ids: dict[str, str]) -> None:
        """Scores of other encoder weights live on another scale: refuse rather than miscalibrate."""
        for m, wid in weights_ids.items():
            if m in self.modalities and self.encoders.get(m) != wid:
                raise ValueError(
                    f"{self.path or 'calibration'}: fitted for {m} encoder weights "
                    f"{self.encoders.get(m)!r}, but the config uses {wid!r}; "
                    "fit one with streamclf calibrate"
                )

    def vectors(self, modality: str, names: list[str]) -> tuple[float, np.ndarray]:
        """(slope, per-category bias) for ``names``; identity for a modality the file does not cover."""
        fit = self.modalities.get(modality)
        if fit is None:
            return 1.0, np.zeros(len(names))
        return fit.slope, np.array([fit.bias + fit.category_bias.get(c, 0.0) for c in names])


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def fit_modality(
    raw: np.ndarray,
    target: np.ndarray,
    sees: np.ndarray,
    names: list[str],
    clips_per_category: dict[str, int],
    regularisation: float = REGULARISATION,
) -> tuple[ModalityFit, dict[str, float]]:
    """Platt scaling of one modality over windows x the categories it sees.

    ``raw`` [windows, categories] uncalibrated scores, ``target`` the same
    shape, 1 where the category is there; ``regularisation`` the inverse L2
    strength. Returns the fit and what it measured on the same windows
    (log-loss and ECE before -> after).
    """
    from sklearn.linear_model import LogisticRegression

    cols = np.flatnonzero(sees)
    own = [j for j in cols if clips_per_category.get(names[j], 0) >= MIN_CLIPS]
    x = logit(raw[:, cols]).reshape(-1, 1)
    y = target[:, cols].reshape(-1)
    onehot = np.zeros((len(x), len(own)))
    cat = np.tile(cols, len(raw))
    for k, j in enumerate(own):
        onehot[cat == j, k] = 1.0
    model = LogisticRegression(C=regularisation, max_iter=2000).fit(np.hstack([x, onehot]), y)
    coef = model.coef_[0]
    fit = ModalityFit(
        slope=round(float(coef[0]), 4),
        bias=round(float(model.intercept_[0]), 4),
        category_bias={names[j]: round(float(coef[1 + k]), 4) for k, j in enumerate(own)},
    )
    before = raw[:, cols].reshape(-1)
    after = model.predict_proba(np.hstack([x, onehot]))[:, 1]
    return fit, {
        "log_loss_before": _log_loss(before, y),
        "log_loss_after": _log_loss(after, y),
        "ece_before": _ece(before, y),
        "ece_after": _ece(after, y),
    }


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return round(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), 4)


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = sum(
        abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any()
    )
    return round(float(total), 4)


def load_calibration(path: str | None, weights_ids: dict[str, str]) -> Calibration | None:
    """The calibration fusion uses: ``path``, or the built-in one when it fits the encoders in use.

    A file the user names must match the encoders (else a one-line
    ValueError); the built-in one is fitted for the default encoders and is
    simply not used with others (their raw scores are then pooled as they
    are). ``"none"`` turns calibration off.
    """
    if path == "none":
        return None
    if path:
        cal = Calibration.load(path)
        cal.check_encoders(weights_ids)
        return cal
    if not BUILTIN.exists():
        return None
    cal = Calibration.load(BUILTIN)
    return cal if all(cal.encoders.get(m) == wid for m, wid in weights_ids.items() if m in cal.modalities) else None
