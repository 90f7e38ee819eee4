"""The networks of the neural fusion heads: one ``nn.Module`` per method.

Every network maps ``(xs: list[Tensor [B, D_m]], mask: Tensor [B, M])`` to
``(logits, per-modality weights or None)``; ``heads.NeuralHead`` trains any
of them the same way. Kept apart from the training code so each reads on its
own: the maths of a fusion method here, how a head is fitted and saved there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over present entries only; absent ones get exactly zero weight."""
    out = logits.masked_fill(~mask, float("-inf")).softmax(dim)
    return torch.nan_to_num(out, nan=0.0)


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
