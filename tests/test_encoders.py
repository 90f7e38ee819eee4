"""Encoder builders: shapes, preprocessing carried by the weights, TF-style padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamclf.encoders import MODELS, EfficientNet_Lite0_Weights, Encoder, efficientnet_lite0, pick_device
from streamclf.encoders.layers import SameConv2d


def test_same_padding_matches_tensorflow():
    """TF pads stride-2 'SAME' convs only at the bottom/right when the total is odd."""
    conv = SameConv2d(1, 1, 3, 2, bias=False)
    x = torch.randn(1, 1, 8, 6)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    odd = torch.randn(1, 1, 7, 7)
    torch.testing.assert_close(conv(odd), F.conv2d(F.pad(odd, (1, 1, 1, 1)), conv.weight, stride=2))


def test_image_transform_resizes_crops_and_scales():
    transform = EfficientNet_Lite0_Weights.DEFAULT.transforms()
    frames = np.full((3, 360, 640, 3), 255, np.uint8)
    x = transform(torch.from_numpy(frames))
    assert x.shape == (3, 3, 224, 224)
    torch.testing.assert_close(x, torch.full_like(x, (255 - 127) / 128))


def test_efficientnet_lite0_shapes_and_determinism():
    model = efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.02)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        emb, logits = model.embed(x)
        again = model(x)
    assert emb.shape == (2, 1280) and logits.shape == (2, 1000)
    torch.testing.assert_close(logits, again)


@pytest.mark.parametrize(
    "name",
    sorted(n for n, e in MODELS.items() if "offline" in e.weights.meta and e.weights.meta["modality"] != "detector"),
)
def test_every_offline_encoder_carries_its_metadata(name):
    """Hub encoders need their weights file: tests/test_zoo.py writes one for them."""
    enc = Encoder(name, torch.device("cpu"))
    meta = enc.meta
    assert meta["modality"] in ("audio", "video", "speech")
    assert len(meta["categories"]) == {"audioset": 521, "imagenet-1k": 1000, "speech": 1}[meta["label_space"]]
    assert meta["activation"] in ("sigmoid", "softmax") and meta["license"] and meta["embedding_dim"]
    assert meta["num_params"] == sum(p.numel() for p in MODELS[name].builder(weights=None).parameters())
    sample = np.zeros((2, 120, 160, 3), np.uint8) if meta["modality"] == "video" else np.zeros(32000, np.float32)
    ((emb, scores),) = enc.embed([sample])
    assert emb.shape[1] == meta["embedding_dim"] and scores.shape[1] == len(meta["categories"])
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_asked_for_without_a_gpu_is_one_clear_error():
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match=r"device cuda:1: no CUDA GPU is usable on this machine; use --device cpu"):
        pick_device("cuda:1")
