"""Shared-space fusion: canonical correlation analysis learned without labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from .heads import Head, Inputs, Present, mask_of, rows


class CCAHead(Head):
    """Project both modalities into the directions where they co-vary, then one classifier.

    The projection is fitted on paired embeddings alone (no labels), so it
    can use unlabeled paired footage; a sample with one modality missing
    lands in the same space through its own projection. Embeddings are
    first reduced by PCA, since CCA on 1000+ dimensions and a few thousand
    pairs overfits.
    """

    method = "cca"
    savable = False

    def __init__(
        self,
        modalities: tuple[str, ...],
        classes: list[str],
        dims: dict[str, int],
        seed: int = 0,
        pca: int = 64,
        components: int = 24,
        **_: Any,
    ) -> None:
        super().__init__(modalities, classes, dims, seed)
        if len(self.modalities) != 2:
            raise ValueError("CCA fusion pairs exactly two modalities")
        self.pca_size, self.components = pca, components

    def _shared(self, x: Inputs, present: Present) -> tuple[list[np.ndarray], np.ndarray]:
        n = rows(x, present)
        a, v = (
            self.pca[m].transform(np.asarray(x[m], np.float64)) if m in x else np.zeros((n, self.pca_size))
            for m in self.modalities
        )
        u, w = self.cca.transform(a, v)
        return [u, w], mask_of(present, self.modalities, n).astype(np.float64)

    @staticmethod
    def _mean(parts: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
        total = sum(mask[:, i : i + 1] * p for i, p in enumerate(parts))
        return total / np.maximum(mask.sum(1, keepdims=True), 1)

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> CCAHead:
        full = mask_of(present, self.modalities, len(y)).all(1)
        self.pca_size = min(self.pca_size, int(full.sum()) - 1, *self.dims.values())
        self.components = min(self.components, self.pca_size)
        self.pca = {
            m: PCA(self.pca_size, random_state=self.seed).fit(np.asarray(x[m], np.float64)[full])
            for m in self.modalities
        }
        a, v = (self.pca[m].transform(np.asarray(x[m], np.float64)[full]) for m in self.modalities)
        self.cca = CCA(n_components=self.components, max_iter=1000).fit(a, v)
        parts, mask = self._shared(x, present)
        feats, ys = [self._mean(parts, mask)], [y]
        for i in range(2):  # the classifier also learns the one-modality case
            m = mask[full].copy()
            m[:, 1 - i] = 0
            feats.append(self._mean([p[full] for p in parts], m))
            ys.append(y[full])
        self.clf = LogisticRegression(C=1.0, max_iter=2000).fit(np.concatenate(feats), np.concatenate(ys))
        return self

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        parts, mask = self._shared(x, present)
        out = np.full((len(mask), len(self.classes)), 1.0 / len(self.classes))
        out[:, self.clf.classes_] = self.clf.predict_proba(self._mean(parts, mask))
        out[mask.sum(1) == 0] = 1.0 / len(self.classes)
        return out.astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "pca": self.pca_size, "components": self.components}

    def n_params(self) -> int:
        pca = sum(p.components_.size for p in self.pca.values())
        return int(pca + self.cca.x_rotations_.size + self.cca.y_rotations_.size + self.clf.coef_.size)
