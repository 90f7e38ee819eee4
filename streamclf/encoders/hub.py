"""torchvision ImageNet-1k and Kinetics-400 models behind our builder + weights API.

Their weights are not on the package registry: they load the standard way,
``torch.hub.load_state_dict_from_url`` into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), so they work for anyone online and, once
cached, offline. Without the file and without a network the loader raises
one ``WeightsUnavailable`` that names the model, the file and the folder.

Each model is split at its last linear layer: the embedding is the
penultimate feature vector and the scores are a softmax over its label space,
as for the offline encoders. Video models take one clip per window: the
transform samples the clip's frames uniformly from the window.
"""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import get_model_builder, get_weight

from .efficientnet_lite import imagenet_labels
from .weights import Weights, WeightsEnum, WeightsUnavailable

_IMAGENET_TERMS = (
    "BSD-3-Clause code + ImageNet-1k terms (torchvision; its note on pre-trained weights: "
    "the training data's terms may apply)"
)
_KINETICS_TERMS = (
    "BSD-3-Clause code + Kinetics-400 terms (torchvision; its note on pre-trained weights: "
    "the training data's terms (YouTube clips) may apply)"
)


def hub_checkpoints() -> Path:
    """The torch hub cache folder for weights files (``TORCH_HOME`` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_cached(weights: WeightsEnum) -> bool:
    return (hub_checkpoints() / weights.meta["hub"]["file"]).exists()


def _load(arch: str, torchvision_weights: str) -> dict[str, torch.Tensor]:
    tv = get_weight(torchvision_weights)
    file = Path(tv.url).name
    try:
        # a download is checked against the hash in its file name, and holds tensors only (weights_only)
        return tv.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsUnavailable(
            f"{arch}: weights file {file} is not in the torch hub cache and cannot be downloaded ({reason}); "
            f"download {tv.url} where the internet is reachable and put it in {hub_checkpoints()} "
            f"(the torch hub cache: $TORCH_HOME/hub/checkpoints)"
        ) from e


def uniform_indices(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``n`` frames (repeating frames when there are fewer)."""
    return np.linspace(0, n - 1, count).round().astype(int)


class TorchvisionTransform:
    """Our frames (RGB uint8 ``[N, H, W, 3]``) -> the torchvision weights' own transform.

    For a video model the ``N`` frames are one window: ``frames`` of them are
    picked uniformly and the result is one clip ``[1, 3, T, h, w]``.
    """

    def __init__(self, torchvision_weights: str, frames: int | None = None) -> None:
        self.inner = get_weight(torchvision_weights).transforms()
        self.frames = frames

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images)
        if self.frames is not None:
            x = x[torch.from_numpy(uniform_indices(len(x), self.frames))]
        x = x.permute(0, 3, 1, 2).contiguous()
        return self.inner(x.unsqueeze(0)) if self.frames is not None else self.inner(x)


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier with its last layer split off: ``embed`` gives (penultimate features, logits)."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        name, last = next(
            (n, m)
            for n, m in reversed(list(model.named_modules()))
            if isinstance(m, (nn.Linear, nn.Conv3d)) and _outputs(m) == num_classes
        )
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Identity())
        self.backbone = model
        # S3D's last layer is a 1x1x1 conv: the same map
        self.fc = nn.Linear(_inputs(last), num_classes, bias=last.bias is not None)
        self.fc.weight.data.copy_(last.weight.reshape(num_classes, -1))
        if last.bias is not None:
            self.fc.bias.data.copy_(last.bias)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.backbone(x)
        return emb, self.fc(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[1]


def _outputs(m: nn.Linear | nn.Conv3d) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _inputs(m: nn.Linear | nn.Conv3d) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _weights(
    arch: str,
    torchvision_weights: str,
    embedding_dim: int,
    clip: tuple[int, float] | None = None,
) -> Weights:
    """One hub model's entry; ``clip`` = (frames, fps) the video model was evaluated with (torchvision's docs)."""
    tv = get_weight(torchvision_weights)
    tf = tv.transforms()
    resize, crop = min(tf.resize_size), tf.crop_size[0]
    meta: dict[str, Any] = {
        "modality": "video",
        "arch": arch,
        "activation": "softmax",
        "resize": resize,
        "embedding_dim": embedding_dim,
        "num_params": tv.meta["num_params"],
        "file_mb": tv.meta["_file_size"],
        "hub": {"url": tv.url, "file": Path(tv.url).name, "torchvision": torchvision_weights},
        "source": f"torchvision {torchvision_weights} ({tv.url})",
    }
    if clip is None:
        meta.update(
            label_space="imagenet-1k",
            categories=imagenet_labels(),
            license=_IMAGENET_TERMS,
            input=f"RGB frame -> resize {resize}, crop {crop}, ImageNet mean/std",
        )
    else:
        frames, fps = clip
        meta.update(
            label_space="kinetics-400",
            categories=list(tv.meta["categories"]),
            license=_KINETICS_TERMS,
            clip={"frames": frames, "fps": fps},
            input=f"clip of {frames} frames at {fps:g} fps -> resize {'x'.join(map(str, tf.resize_size))}, crop {crop}",
        )
    return Weights(
        id=f"{arch}-{torchvision_weights.split('.')[-1].lower()}-{Path(tv.url).stem.split('-')[-1]}",
        load=functools.partial(_load, arch, torchvision_weights),
        transforms=functools.partial(TorchvisionTransform, torchvision_weights, clip and clip[0]),
        meta=meta,
    )


class Torchvision_Weights(WeightsEnum):
    """Hub weights; ``meta["hub"]`` names the file the torch hub cache holds."""

    MOBILENET_V3_LARGE = _weights("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 1280)
    EFFICIENTNET_V2_S = _weights("efficientnet_v2_s", "EfficientNet_V2_S_Weights.IMAGENET1K_V1", 1280)
    CONVNEXT_TINY = _weights("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 768)
    R2PLUS1D_18 = _weights("r2plus1d_18", "R2Plus1D_18_Weights.KINETICS400_V1", 512, clip=(16, 15.0))
    S3D = _weights("s3d", "S3D_Weights.KINETICS400_V1", 1024, clip=(32, 15.0))
    MVIT_V2_S = _weights("mvit_v2_s", "MViT_V2_S_Weights.KINETICS400_V1", 768, clip=(16, 7.5))


def torchvision_model(arch: str, *, weights: Torchvision_Weights | None = None) -> TorchvisionClassifier:
    """Build torchvision's ``arch`` split for ``embed``; ``weights=None`` gives a random network."""
    spec = weights or next(w for w in Torchvision_Weights if w.meta["arch"] == arch)
    num_classes = len(spec.meta["categories"])
    state = weights.get_state_dict() if weights is not None else None  # before building: fail fast offline
    model = get_model_builder(arch)(weights=None, num_classes=num_classes)
    if state is not None:
        model.load_state_dict(state)
    return TorchvisionClassifier(model.eval(), num_classes).eval()
