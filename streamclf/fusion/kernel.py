"""Kernel-level fusion: multiple kernel learning with one RBF kernel per modality."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.svm import SVC

from .heads import Head, Inputs, Present, mask_of, rows


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    return np.exp(-gamma * sqdist(a, b))


def alignment(k: np.ndarray, y: np.ndarray) -> float:
    """Centred kernel-target alignment: how well K agrees with the ideal kernel of the labels."""
    n = len(y)
    h = np.eye(n) - 1.0 / n
    kc = h @ k @ h
    target = (y[:, None] == y[None, :]).astype(np.float64)
    tc = h @ target @ h
    return float((kc * tc).sum() / (np.linalg.norm(kc) * np.linalg.norm(tc) + 1e-12))


class MKLHead(Head):
    """K = sum_i b_i K_i over present modalities, b from kernel alignment, then an SVM.

    Helps on small data sets where a well-chosen kernel beats learning
    features, and reads as "how much does each modality's similarity
    count". It keeps its training set (support vectors), so it is a
    comparison method, not a head to ship.
    """

    method = "mkl"
    savable = False

    def __init__(
        self,
        modalities: tuple[str, ...],
        classes: list[str],
        dims: dict[str, int],
        seed: int = 0,
        C: float = 10.0,
        **_: Any,
    ) -> None:
        super().__init__(modalities, classes, dims, seed)
        self.C = C
        self.b = np.ones(len(self.modalities)) / len(self.modalities)

    def _std(self, x: Inputs, n: int) -> list[np.ndarray]:
        return [
            ((np.asarray(x[m], np.float64) - self.mean[m]) / self.std[m]) if m in x else np.zeros((n, self.dims[m]))
            for m in self.modalities
        ]

    def _kernel(self, x: Inputs, present: Present) -> np.ndarray:
        n = rows(x, present)
        mask = mask_of(present, self.modalities, n).astype(np.float64)
        w = self.b[None, :] * mask
        k = sum(w[:, i : i + 1] * rbf(v, self.train[i], self.gamma[i]) for i, v in enumerate(self._std(x, n)))
        return k / np.maximum(w.sum(1, keepdims=True), 1e-12)

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> MKLHead:
        full = mask_of(present, self.modalities, len(y)).all(1)
        x = {m: np.asarray(x[m])[full] for m in self.modalities}
        y = y[full]
        self.mean = {m: x[m].mean(0) for m in self.modalities}
        self.std = {m: x[m].std(0) + 1e-6 for m in self.modalities}
        self.train = self._std(x, len(y))
        self.gamma, kernels = [], []
        for v in self.train:
            sub = v[np.random.default_rng(self.seed).choice(len(v), min(len(v), 500), replace=False)]
            self.gamma.append(1.0 / np.median(sqdist(sub, sub)[np.triu_indices(len(sub), 1)]))  # median heuristic
            kernels.append(rbf(v, v, self.gamma[-1]))
        a = np.array([max(alignment(k, y), 1e-6) for k in kernels])
        self.b = a / a.sum()
        gram = sum(b * k for b, k in zip(self.b, kernels, strict=True))
        with warnings.catch_warnings():  # SVC's Platt scaling is the one that works on a precomputed kernel
            warnings.filterwarnings("ignore", "The `probability` parameter", FutureWarning)
            self.svm = SVC(C=self.C, kernel="precomputed", probability=True, random_state=self.seed).fit(gram, y)
        return self

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        n = rows(x, present)
        out = np.full((n, len(self.classes)), 1.0 / len(self.classes))
        out[:, self.svm.classes_] = self.svm.predict_proba(self._kernel(x, present))
        out[~mask_of(present, self.modalities, n).any(1)] = 1.0 / len(self.classes)
        return out.astype(np.float32)

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        mask = mask_of(present, self.modalities, rows(x, present))
        w = self.b[None, :] * mask
        w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
        return {m: w[:, i] for i, m in enumerate(self.modalities)}

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "C": self.C}

    def n_params(self) -> int:
        sv = self.svm.support_
        return int(len(sv) * sum(self.dims.values()) + self.svm.dual_coef_.size + len(self.b))
