"""Decision-level and hybrid fusion: combine the probabilities of per-modality heads.

These need no paired training data beyond what the unimodal heads see and
degrade gracefully when a modality is missing (the absent voter just does
not vote). Weights and meta-classifiers are fitted on out-of-fold
probabilities so they learn how the unimodal heads behave on unseen data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any, Self

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold

from .heads import Head, Inputs, NeuralHead, Present, mask_of, rows


def take(x: Inputs, present: Present, idx: np.ndarray) -> tuple[Inputs, Present]:
    return {m: v[idx] for m, v in x.items()}, {m: v[idx] for m, v in present.items()}


def out_of_fold(
    make: Callable[[], Head],
    x: Inputs,
    present: Present,
    y: np.ndarray,
    folds: int = 3,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities for every training row from a head that never saw that row.

    With ``groups`` (e.g. speakers, cameras) no group is on both sides, so
    the probabilities show how a modality does on an unseen group; without
    them a modality that memorises its training speakers looks too good.
    """
    out = np.zeros((len(y), len(make().classes)), np.float32)
    if groups is not None and len(np.unique(groups)) >= 2:
        split = GroupKFold(min(folds, len(np.unique(groups)))).split(y, y, groups)
    else:
        k = max(2, min(folds, int(np.bincount(y).min()) if len(y) else 2))
        split = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    for train, test in split:
        head = make().fit(*take(x, present, train), y[train])
        out[test] = head.predict_proba(*take(x, present, test))
    return out


def simplex(m: int, steps: int = 10) -> np.ndarray:
    """All weight vectors on a grid of the m-simplex (step 1/steps)."""
    return np.array([c for c in itertools.product(range(steps + 1), repeat=m) if sum(c) == steps], np.float32) / steps


def shares(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row weights over the present sources, summing to 1 (0 where none is present).

    A row whose present sources all have weight 0 falls back to equal
    weights over them: a zero-weight modality still beats no answer.
    """
    w = weights[None, :] * mask
    idle = (w.sum(1) == 0) & (mask.sum(1) > 0)
    w[idle] = mask[idle]
    return w / np.maximum(w.sum(1, keepdims=True), 1e-12)


def combine(probs: list[np.ndarray], mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of probabilities over the present sources; uniform where none is."""
    w = shares(weights, mask)
    total = sum(w[:, i : i + 1] * p for i, p in enumerate(probs))
    return np.where(mask.sum(1, keepdims=True) > 0, total, 1.0 / probs[0].shape[1])


def best_weights(probs: list[np.ndarray], mask: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The simplex grid point with the lowest log-loss on out-of-fold probabilities."""
    best, best_loss = None, np.inf
    for w in simplex(len(probs)):
        p = combine(probs, mask, w)
        loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean()
        if loss < best_loss - 1e-9:
            best, best_loss = w, loss
    if best is None:  # every grid point's loss was NaN
        raise ValueError("fusion weights: no finite log-loss on the out-of-fold probabilities (NaN scores?)")
    return best


class _Composite(Head):
    """Holds one unimodal head per modality (same capacity as the baselines)."""

    def __init__(
        self, modalities: tuple[str, ...], classes: list[str], dims: dict[str, int], seed: int = 0, **hyper: Any
    ) -> None:
        super().__init__(modalities, classes, dims, seed)
        hyper.pop("net", None)
        self.hyper = hyper
        self.unimodal = {m: self._unimodal(m) for m in self.modalities}

    def _unimodal(self, m: str) -> NeuralHead:
        return NeuralHead((m,), self.classes, self.dims, self.seed, net="unimodal", **self.hyper)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), **self.hyper}

    def _fit_unimodal(self, x: Inputs, present: Present, y: np.ndarray) -> None:
        for m, head in self.unimodal.items():
            head.fit(*take(x, present, np.flatnonzero(present[m])), y[present[m]])

    def _unimodal_probs(self, x: Inputs, present: Present) -> list[np.ndarray]:
        return [h.predict_proba(x, present) for h in self.unimodal.values()]

    def _oof(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None) -> list[np.ndarray]:
        out = []
        for m in self.modalities:
            sel = np.flatnonzero(present[m])
            p = np.full((len(y), len(self.classes)), 1.0 / len(self.classes), np.float32)
            p[sel] = out_of_fold(
                partial(self._unimodal, m),
                *take(x, present, sel),
                y[sel],
                seed=self.seed,
                groups=None if groups is None else groups[sel],
            )
            out.append(p)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{m}.{k}": v for m, h in self.unimodal.items() for k, v in h.arrays().items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> Self:
        for m, h in self.unimodal.items():
            h.load_arrays({k[len(m) + 1 :]: v for k, v in arrays.items() if k.startswith(m + ".")})
        return self

    def n_params(self) -> int:
        return sum(h.n_params() for h in self.unimodal.values())


class DecisionHead(_Composite):
    """Late fusion of unimodal probabilities by a fixed or validated rule.

    - ``average``: normalised geometric mean (mean of log-probabilities), a
      product of experts: a class must be plausible to every voter.
    - ``soft_vote``: arithmetic mean of probabilities; one confident voter
      can carry a class.
    - ``weighted_average``: arithmetic mean with per-modality weights chosen
      on out-of-fold probabilities; helps when one modality is much better.
    - ``majority_vote``: each present modality votes its top class; ties
      (always possible with two voters) go to the higher summed probability.
    """

    RULES = ("average", "soft_vote", "weighted_average", "majority_vote")

    def __init__(
        self,
        modalities: tuple[str, ...],
        classes: list[str],
        dims: dict[str, int],
        seed: int = 0,
        rule: str = "soft_vote",
        **hyper: Any,
    ) -> None:
        if rule not in self.RULES:
            raise ValueError(f"unknown decision rule {rule!r}; choose from {', '.join(self.RULES)}")
        super().__init__(modalities, classes, dims, seed, **hyper)
        self.method = rule
        self.weights = np.ones(len(self.modalities), np.float32) / len(self.modalities)

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> DecisionHead:
        if self.method == "weighted_average":
            mask = mask_of(present, self.modalities, len(y))
            self.weights = best_weights(self._oof(x, present, y, groups), mask, y)
        self._fit_unimodal(x, present, y)
        return self

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        probs = self._unimodal_probs(x, present)
        mask = mask_of(present, self.modalities, rows(x, present)).astype(np.float32)
        c = len(self.classes)
        if self.method == "average":
            logp = combine([np.log(np.clip(p, 1e-7, 1)) for p in probs], mask, self.weights)
            out = np.exp(logp - logp.max(1, keepdims=True))
            return out / out.sum(1, keepdims=True)
        if self.method == "majority_vote":
            votes = sum(mask[:, i : i + 1] * np.eye(c, dtype=np.float32)[p.argmax(1)] for i, p in enumerate(probs))
            scores = votes + 1e-3 * combine(probs, mask, self.weights)  # the tie-break
            return scores / scores.sum(1, keepdims=True)
        return combine(probs, mask, self.weights)

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        mask = mask_of(present, self.modalities, rows(x, present)).astype(np.float32)
        w = shares(self.weights, mask)
        return {m: w[:, i] for i, m in enumerate(self.modalities)}

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "rule": self.method}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "weights": self.weights}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> Self:
        self.weights = np.asarray(arrays["weights"], np.float32)
        return super().load_arrays(arrays)


def _features(probs: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    return np.concatenate([p * mask[:, i : i + 1] for i, p in enumerate(probs)] + [mask], axis=1)


def _with_dropped(probs: list[np.ndarray], mask: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stacking features for the rows as they are plus each complete row with one modality hidden."""
    feats, ys = [_features(probs, mask)], [y]
    full = mask.sum(1) == mask.shape[1]
    if mask.shape[1] > 1:
        for i in range(mask.shape[1]):
            m = mask[full].copy()
            m[:, i] = 0
            feats.append(_features([p[full] for p in probs], m))
            ys.append(y[full])
    return np.concatenate(feats), np.concatenate(ys)


def _lr_proba(f: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    z = f @ coef.T + intercept
    if z.shape[1] == 1:  # binary logistic regression keeps one column
        z = np.concatenate([-z / 2, z / 2], axis=1)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class StackingHead(_Composite):
    """Stacking: a logistic-regression meta-classifier on out-of-fold unimodal probabilities.

    Learns which modality to trust for which class (e.g. audio for "7",
    images for "1"); the presence flags are features, and training adds
    copies with one modality hidden so the meta-classifier knows that case.
    """

    method = "stacking"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.coef = np.zeros(
            (len(self.classes), len(self.classes) * len(self.modalities) + len(self.modalities)), np.float32
        )
        self.intercept = np.zeros(len(self.classes), np.float32)

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> StackingHead:
        mask = mask_of(present, self.modalities, len(y)).astype(np.float32)
        f, yy = _with_dropped(self._oof(x, present, y, groups), mask, y)
        meta = LogisticRegression(C=1.0, max_iter=2000).fit(f, yy)
        if len(meta.classes_) != len(self.classes):
            raise ValueError("stacking needs every class in the training data")
        self.coef, self.intercept = meta.coef_.astype(np.float32), meta.intercept_.astype(np.float32)
        self._fit_unimodal(x, present, y)
        return self

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        mask = mask_of(present, self.modalities, rows(x, present)).astype(np.float32)
        out = _lr_proba(_features(self._unimodal_probs(x, present), mask), self.coef, self.intercept)
        out[mask.sum(1) == 0] = 1.0 / len(self.classes)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "meta.coef": self.coef, "meta.intercept": self.intercept}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> Self:
        self.coef, self.intercept = np.asarray(arrays["meta.coef"]), np.asarray(arrays["meta.intercept"])
        return super().load_arrays(arrays)

    def n_params(self) -> int:
        return super().n_params() + self.coef.size + self.intercept.size


class HybridHead(_Composite):
    """Hierarchical fusion: a feature-level head's probabilities mixed with the unimodal heads'.

    The fused head captures interactions, the unimodal heads keep working
    when the fused one is unsure or a modality is gone; the mixing weights
    are chosen on out-of-fold probabilities.
    """

    method = "hybrid"

    def __init__(
        self,
        modalities: tuple[str, ...],
        classes: list[str],
        dims: dict[str, int],
        seed: int = 0,
        fused: str = "concat",
        **hyper: Any,
    ) -> None:
        super().__init__(modalities, classes, dims, seed, **hyper)
        self.fused_net = fused
        self.fused = self._fused()
        self.weights = np.ones(len(self.modalities) + 1, np.float32) / (len(self.modalities) + 1)

    def _fused(self) -> NeuralHead:
        return NeuralHead(self.modalities, self.classes, self.dims, self.seed, net=self.fused_net, **self.hyper)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "fused": self.fused_net}

    def _mask(self, present: Present, n: int) -> np.ndarray:
        mask = mask_of(present, self.modalities, n).astype(np.float32)
        return np.concatenate([mask.max(1, keepdims=True), mask], axis=1)

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> HybridHead:
        fused_oof = out_of_fold(self._fused, x, present, y, seed=self.seed, groups=groups)
        self.weights = best_weights([fused_oof] + self._oof(x, present, y, groups), self._mask(present, len(y)), y)
        self.fused.fit(x, present, y)
        self._fit_unimodal(x, present, y)
        return self

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        probs = [self.fused.predict_proba(x, present)] + self._unimodal_probs(x, present)
        return combine(probs, self._mask(present, rows(x, present)), self.weights)

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        w = shares(self.weights, self._mask(present, rows(x, present)))
        return {"fused": w[:, 0], **{m: w[:, i + 1] for i, m in enumerate(self.modalities)}}

    def arrays(self) -> dict[str, np.ndarray]:
        fused = {f"fused.{k}": v for k, v in self.fused.arrays().items()}
        return {**super().arrays(), **fused, "weights": self.weights}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> Self:
        self.fused.load_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("fused.")})
        self.weights = np.asarray(arrays["weights"], np.float32)
        return super().load_arrays(arrays)

    def n_params(self) -> int:
        return super().n_params() + self.fused.n_params()
