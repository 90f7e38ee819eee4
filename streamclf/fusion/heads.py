"""Trainable fusion heads: every method behind one interface.

A head sees pooled per-modality embeddings and which modalities are present,
never raw media, so the same head serves training, comparison and the live
worker. Input convention everywhere:

    x:       {modality: float32 [N, D_m]}   rows of absent modalities are ignored
    present: {modality: bool [N]}

Neural heads live here (their networks in ``nets``); kernel, decision-level
and shared-space heads in their own modules, all registered in
``streamclf.fusion.METHODS``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from .nets import NETS

Inputs = dict[str, np.ndarray]
Present = dict[str, np.ndarray]


class Head:
    """What every fusion method provides.

    ``arrays``/``spec`` are everything needed to rebuild a fitted head
    (saved as safetensors + a card); methods that cannot be saved that way
    set ``savable = False`` and are for comparison only.
    """

    method: str = ""
    savable: bool = True

    def __init__(self, modalities: tuple[str, ...], classes: list[str], dims: dict[str, int], seed: int = 0) -> None:
        self.modalities, self.classes, self.seed = tuple(modalities), list(classes), seed
        self.dims = {m: int(dims[m]) for m in self.modalities}

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> Head:
        """``groups`` (speaker, camera ...) keeps internal validation group-disjoint where a method has one."""
        raise NotImplementedError

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        """``[N, C]`` probabilities; rows with no usable modality are uniform."""
        raise NotImplementedError

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        """Per-modality weight ``[N]`` the method gave each modality, when it has one."""
        return {}

    def n_params(self) -> int:
        return int(sum(a.size for a in self.arrays().values()))

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this head (JSON-able)."""
        return {
            "method": self.method,
            "modalities": list(self.modalities),
            "classes": self.classes,
            "dims": self.dims,
            "seed": self.seed,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> Head:
        raise NotImplementedError


def mask_of(present: Present, modalities: tuple[str, ...], n: int) -> np.ndarray:
    """``[N, M]`` bool in the head's modality order (missing keys = absent)."""
    cols = [np.asarray(present.get(m, np.zeros(n, bool)), bool) for m in modalities]
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0), bool)


def rows(x: Inputs, present: Present) -> int:
    for v in list(x.values()) + list(present.values()):
        return len(v)
    raise ValueError("no inputs")


_fits: dict[str, dict[str, np.ndarray]] | None = None


@contextmanager
def reuse_fits() -> Iterator[None]:
    """Inside the block a NeuralHead fitted again with the same settings on the same rows reuses the first fit.

    Decision, stacking and hybrid heads train the same unimodal and
    out-of-fold heads as the baselines and each other; a comparison then
    trains each once. Every fit is seeded on its own, so a reused fit is
    exactly the fit it replaces.
    """
    global _fits
    outer = _fits
    _fits = {} if outer is None else outer
    try:
        yield
    finally:
        _fits = outer


class NeuralHyper(TypedDict):
    """A neural head's settings (written to its card): typed, since training uses them as numbers."""

    net: str
    hidden: int
    dropout: float
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    modality_dropout: float
    fallback: bool


class NeuralHead(Head):
    """Trains one of ``NETS`` with AdamW, standardised inputs and modality dropout.

    Modality dropout hides one present modality of a training sample with
    probability ``modality_dropout``, so the head learns the absent case
    through the mask instead of meeting it first in production.

    ``fallback``: the head also trains one unimodal network per modality on
    the same rows (exactly the network ``--fusion audio`` / ``video`` would
    train) and answers from it when only that modality is present. Modality
    dropout shows the fused network the one-modality case in a small share
    of its training only; measured on held-out speakers, a gated head with
    the video removed was 3-17 points under a microphone-only head. With the
    fallback a modality removed at run time costs nothing against the system
    built for the surviving one. Off for heads saved before it existed.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        classes: list[str],
        dims: dict[str, int],
        seed: int = 0,
        net: str = "concat",
        hidden: int = 128,
        dropout: float = 0.2,
        epochs: int = 40,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        modality_dropout: float = 0.3,
        fallback: bool = False,
    ) -> None:
        super().__init__(modalities, classes, dims, seed)
        if net not in NETS:
            raise ValueError(f"unknown network {net!r}; choose from {', '.join(NETS)}")
        if net == "unimodal" and len(self.modalities) != 1:
            raise ValueError("a unimodal head takes exactly one modality")
        self.method = self.modalities[0] if net == "unimodal" else net
        self.hyper = NeuralHyper(
            net=net,
            hidden=hidden,
            dropout=dropout,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            modality_dropout=modality_dropout,
            fallback=fallback and len(self.modalities) > 1,
        )
        torch.manual_seed(seed)
        self.net = NETS[net]([self.dims[m] for m in self.modalities], len(self.classes), hidden, dropout)
        self.alone: dict[str, nn.Module] = {}
        for m in self.modalities if self.hyper["fallback"] else ():
            torch.manual_seed(seed)  # initialised as a unimodal head of this seed is
            self.alone[m] = NETS["unimodal"]([self.dims[m]], len(self.classes), hidden, dropout)
        self.mean = {m: np.zeros(d, np.float32) for m, d in self.dims.items()}
        self.std = {m: np.ones(d, np.float32) for m, d in self.dims.items()}

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), **self.hyper}

    def _tensors(self, x: Inputs, present: Present) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = rows(x, present)
        mask = mask_of(present, self.modalities, n)
        xs = []
        for i, m in enumerate(self.modalities):
            v = x.get(m)
            v = (
                np.zeros((n, self.dims[m]), np.float32)
                if v is None
                else (np.asarray(v, np.float32) - self.mean[m]) / self.std[m]
            )
            xs.append(torch.from_numpy(np.where(mask[:, i : i + 1], v, 0.0).astype(np.float32)))
        return xs, torch.from_numpy(mask)

    def _fit_key(self, x: Inputs, mask: np.ndarray, y: np.ndarray) -> str:
        h = hashlib.sha1(json.dumps(self.spec(), sort_keys=True).encode())
        for i, m in enumerate(self.modalities):
            h.update(np.ascontiguousarray(np.asarray(x[m], np.float32)[mask[:, i]]).tobytes())
        h.update(mask.tobytes())
        h.update(np.asarray(y, np.int64).tobytes())
        return h.hexdigest()

    def fit(self, x: Inputs, present: Present, y: np.ndarray, groups: np.ndarray | None = None) -> NeuralHead:
        n = rows(x, present)
        mask = mask_of(present, self.modalities, n)
        if _fits is None:
            self._train(x, mask, y)
            return self
        key = self._fit_key(x, mask, y)
        if key not in _fits:
            self._train(x, mask, y)
            _fits[key] = {k: v.copy() for k, v in self.arrays().items()}
        return self.load_arrays(_fits[key])

    def _train(self, x: Inputs, mask: np.ndarray, y: np.ndarray) -> None:
        present = {m: mask[:, i] for i, m in enumerate(self.modalities)}
        for i, m in enumerate(self.modalities):
            seen = np.asarray(x[m], np.float32)[mask[:, i]]
            if len(seen):
                self.mean[m], self.std[m] = seen.mean(0), seen.std(0) + 1e-6
        xs, mask_t = self._tensors(x, present)
        keep = mask_t.any(1)
        y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self._fit_net(self.net, [v[keep] for v in xs], mask_t[keep], y_t[keep])
        for i, m in enumerate(self.modalities):
            if m in self.alone:
                rows_m = mask_t[:, i]
                self._fit_net(self.alone[m], [xs[i][rows_m]], mask_t[rows_m][:, i : i + 1], y_t[rows_m])

    def _fit_net(self, net: nn.Module, xs: list[torch.Tensor], mask_t: torch.Tensor, y_t: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)  # dropout draws from the global generator: a fit depends on its own seed only
        opt = torch.optim.AdamW(net.parameters(), lr=self.hyper["lr"], weight_decay=self.hyper["weight_decay"])
        loss_fn = nn.CrossEntropyLoss()
        net.train()
        bs = self.hyper["batch_size"]
        for _ in range(self.hyper["epochs"]):
            order = torch.randperm(len(y_t), generator=gen)
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                mb = self._drop_modalities(mask_t[idx], gen)
                logits, _ = net([v[idx] * mb[:, i : i + 1] for i, v in enumerate(xs)], mb)
                loss = loss_fn(logits, y_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()

    def _drop_modalities(self, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.hyper["modality_dropout"]
        if p <= 0 or mask.shape[1] < 2:
            return mask
        full = mask.sum(1) >= 2
        drop = (torch.rand(len(mask), generator=gen) < p) & full
        which = torch.randint(mask.shape[1], (len(mask),), generator=gen)
        out = mask.clone()
        out[drop, which[drop]] = False
        return out

    @torch.inference_mode()
    def _run(self, x: Inputs, present: Present) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        xs, mask = self._tensors(x, present)
        logits, weights = self.net(xs, mask)
        probs = logits.softmax(-1).numpy()
        w = None if weights is None else weights.numpy()
        only = mask.sum(1) == 1
        for i, m in enumerate(self.modalities):
            rows_m = only & mask[:, i]
            if m in self.alone and rows_m.any():
                alone, _ = self.alone[m]([xs[i][rows_m]], mask[rows_m][:, i : i + 1])
                probs[rows_m.numpy()] = alone.softmax(-1).numpy()
                if w is not None:
                    w[rows_m.numpy()] = np.eye(len(self.modalities))[i]
        none = ~mask.numpy().any(1)
        probs[none] = 1.0 / len(self.classes)
        return probs, w, mask.numpy()

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        return self._run(x, present)[0]

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        _, w, _ = self._run(x, present)
        return {} if w is None else {m: w[:, i] for i, m in enumerate(self.modalities)}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        for m, net in self.alone.items():
            out |= {f"alone.{m}.{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        for m in self.modalities:
            out[f"mean.{m}"], out[f"std.{m}"] = self.mean[m], self.std[m]
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> NeuralHead:
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")}
        )
        for m, net in self.alone.items():
            prefix = f"alone.{m}."
            net.load_state_dict(
                {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
            )
            net.eval()
        for m in self.modalities:
            self.mean[m], self.std[m] = arrays[f"mean.{m}"], arrays[f"std.{m}"]
        self.net.eval()
        return self

    def n_params(self) -> int:
        return sum(p.numel() for net in (self.net, *self.alone.values()) for p in net.parameters())
