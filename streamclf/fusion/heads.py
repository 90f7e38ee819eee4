"""Trainable fusion heads: every method behind one interface.

A head sees pooled per-modality embeddings and which modalities are present,
never raw media, so the same head serves training, comparison and the live
worker. Input convention everywhere:

    x:       {modality: float32 [N, D_m]}   rows of absent modalities are ignored
    present: {modality: bool [N]}

Neural heads live here; kernel, decision-level and shared-space heads in
their own modules, all registered in ``streamclf.fusion.METHODS``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

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


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over present entries only; absent ones get exactly zero weight."""
    out = logits.masked_fill(~mask, float("-inf")).softmax(dim)
    return torch.nan_to_num(out, nan=0.0)


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


# ---- networks: forward(xs: list[Tensor [B, D_m]], mask: Tensor [B, M]) -> (logits, weights | None)


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class _Projected(nn.Module):
    """Shared part of methods that first map every modality to one size H."""

    def __init__(self, dims: list[int], hidden: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)) for d in dims)

    def project(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([p(x) for p, x in zip(self.proj, xs, strict=True)], dim=1)  # [B, M, H]


class UnimodalNet(nn.Module):
    """Baseline: one modality through an MLP of the same width as the fused heads."""

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mlp = _mlp(dims[0], hidden, classes, dropout)

    def forward(self, xs, mask):
        return self.mlp(xs[0]) * mask[:, :1], None


class ConcatNet(nn.Module):
    """Early fusion: concatenate embeddings, one MLP.

    Helps when the modalities interact at the feature level and both are
    usually there; an absent modality is replaced by a learned "missing"
    vector (trained through modality dropout) and flagged in the input.
    """

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.missing = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in dims)
        self.mlp = _mlp(sum(dims) + len(dims), hidden, classes, dropout)

    def forward(self, xs, mask):
        parts = [torch.where(mask[:, i : i + 1], x, self.missing[i]) for i, x in enumerate(xs)]
        return self.mlp(torch.cat(parts + [mask.float()], dim=1)), None


class WeightedSumNet(_Projected):
    """Learned weighted sum H = sum_i a_i P_i(v_i), a = softmax(w) over present modalities.

    One global trust level per modality: robust and cheap, but it cannot
    trust the microphone more on one clip than another.
    """

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float) -> None:
        super().__init__(dims, hidden, dropout)
        self.w = nn.Parameter(torch.zeros(len(dims)))
        self.out = nn.Linear(hidden, classes)

    def forward(self, xs, mask):
        a = masked_softmax(self.w.expand(mask.shape), mask)
        return self.out((a.unsqueeze(-1) * self.project(xs)).sum(1)), a


class AttentionNet(_Projected):
    """Attention: a score e_i = g(P_i v_i) per modality per sample, a = softmax(e).

    Helps when which modality is informative changes from clip to clip
    (noise on one track); the weights are readable per record.
    """

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float) -> None:
        super().__init__(dims, hidden, dropout)
        self.score = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))
        self.out = nn.Linear(hidden, classes)

    def forward(self, xs, mask):
        h = self.project(xs)
        a = masked_softmax(self.score(h).squeeze(-1), mask)
        return self.out((a.unsqueeze(-1) * h).sum(1)), a


class GatedNet(nn.Module):
    """Gated multimodal unit: h_i = tanh(W_i v_i); per-dimension gates choose between them.

    Like attention but per feature dimension, so it can take texture from
    one modality and timing from the other. With two modalities the masked
    softmax over gates is exactly GMU's sigmoid gate z and (1 - z).
    """

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.h = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.gate = nn.Linear(len(dims) * hidden, len(dims) * hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, classes)

    def forward(self, xs, mask):
        h = torch.stack([torch.tanh(f(x)) for f, x in zip(self.h, xs, strict=True)], dim=1) * mask.unsqueeze(-1)
        b, m, d = h.shape
        z = masked_softmax(self.gate(h.flatten(1)).view(b, m, d), mask.unsqueeze(-1).expand(b, m, d), dim=1)
        return self.out(self.drop((z * h).sum(1))), z.mean(-1)


class TensorNet(nn.Module):
    """Tensor fusion: outer product of [z_i; 1] over modalities, then an MLP.

    The appended 1 keeps the unimodal terms next to every cross term, so
    the head models pairwise interactions explicitly; an absent modality
    becomes [0; 1], which leaves only the other modalities' own terms.
    """

    def __init__(self, dims: list[int], classes: int, hidden: int, dropout: float, rank_size: int = 16) -> None:
        super().__init__()
        self.z = nn.ModuleList(nn.Sequential(nn.Linear(d, rank_size), nn.ReLU()) for d in dims)
        self.mlp = _mlp((rank_size + 1) ** len(dims), hidden, classes, dropout)

    def forward(self, xs, mask):
        t = None
        for i, (f, x) in enumerate(zip(self.z, xs, strict=True)):
            z = torch.cat([f(x) * mask[:, i : i + 1], torch.ones_like(x[:, :1])], dim=1)
            t = z if t is None else (t.unsqueeze(2) * z.unsqueeze(1)).flatten(1)
        return self.mlp(t), None


class LowRankNet(nn.Module):
    """Low-rank tensor fusion: the tensor-fusion weight factored into r modality-specific factors.

    Same interactions as tensor fusion at linear (not exponential) cost in
    the number of modalities.
    """

    def __init__(
        self, dims: list[int], classes: int, hidden: int, dropout: float, rank_size: int = 16, rank: int = 4
    ) -> None:
        super().__init__()
        self.z = nn.ModuleList(nn.Sequential(nn.Linear(d, rank_size), nn.ReLU()) for d in dims)
        self.factors = nn.ParameterList(nn.Parameter(torch.randn(rank, rank_size + 1, hidden) * 0.1) for _ in dims)
        self.rank_weight = nn.Parameter(torch.full((1, rank), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, classes)

    def forward(self, xs, mask):
        fused = None
        for i, (f, x, w) in enumerate(zip(self.z, xs, self.factors, strict=True)):
            z = torch.cat([f(x) * mask[:, i : i + 1], torch.ones_like(x[:, :1])], dim=1)
            part = torch.einsum("bd,rdh->brh", z, w)
            fused = part if fused is None else fused * part
        h = torch.relu((self.rank_weight.unsqueeze(-1) * fused).sum(1) + self.bias)
        return self.out(self.drop(h)), None


NETS: dict[str, Callable[..., nn.Module]] = {
    "unimodal": UnimodalNet,
    "concat": ConcatNet,
    "weighted_sum": WeightedSumNet,
    "attention": AttentionNet,
    "gated": GatedNet,
    "tensor": TensorNet,
    "lowrank": LowRankNet,
}


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


class NeuralHead(Head):
    """Trains one of ``NETS`` with AdamW, standardised inputs and modality dropout.

    Modality dropout hides one present modality of a training sample with
    probability ``modality_dropout``, so the head learns the absent case
    through the mask instead of meeting it first in production.
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
        )
        torch.manual_seed(seed)
        self.net = NETS[net]([self.dims[m] for m in self.modalities], len(self.classes), hidden, dropout)
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
        xs, mask_t, y_t = (
            [v[keep] for v in xs],
            mask_t[keep],
            torch.as_tensor(np.asarray(y)[keep.numpy()], dtype=torch.long),
        )
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)  # dropout draws from the global generator: a fit depends on its own seed only
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hyper["lr"], weight_decay=self.hyper["weight_decay"])
        loss_fn = nn.CrossEntropyLoss()
        self.net.train()
        bs = self.hyper["batch_size"]
        for _ in range(self.hyper["epochs"]):
            order = torch.randperm(len(y_t), generator=gen)
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                mb = self._drop_modalities(mask_t[idx], gen)
                logits, _ = self.net([v[idx] * mb[:, i : i + 1] for i, v in enumerate(xs)], mb)
                loss = loss_fn(logits, y_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()

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
        none = ~mask.numpy().any(1)
        probs[none] = 1.0 / len(self.classes)
        return probs, (None if weights is None else weights.numpy()), mask.numpy()

    def predict_proba(self, x: Inputs, present: Present) -> np.ndarray:
        return self._run(x, present)[0]

    def explain(self, x: Inputs, present: Present) -> dict[str, np.ndarray]:
        _, w, _ = self._run(x, present)
        return {} if w is None else {m: w[:, i] for i, m in enumerate(self.modalities)}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        for m in self.modalities:
            out[f"mean.{m}"], out[f"std.{m}"] = self.mean[m], self.std[m]
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> NeuralHead:
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")}
        )
        for m in self.modalities:
            self.mean[m], self.std[m] = arrays[f"mean.{m}"], arrays[f"std.{m}"]
        self.net.eval()
        return self

    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())
