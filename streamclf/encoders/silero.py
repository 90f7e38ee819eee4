"""silero-vad (speech probability, MIT) as a plain PyTorch module: the speech gate.

The weights are those of ``silero_vad.jit``, the model the PyPI package
``silero-vad`` itself loads (its ``silero_vad_16k.safetensors`` holds an older,
different set). The TorchScript file ships inside the installed package; it is
read once for its tensors and cached as safetensors. The package is never
imported (that sets torch to one thread). The network: a 256-point STFT as a
convolution, four 1-d convolutions, an LSTM cell carried across 32 ms chunks,
and a sigmoid per chunk; it matches the TorchScript model to 1e-6.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..types import SAMPLE_RATE
from .weights import Weights, WeightsEnum, WeightsUnavailable, converted, loaded

CHUNK = 512  # 32 ms: the step silero-vad scores at 16 kHz
CONTEXT = 64  # samples of the previous chunk each chunk sees
SPAN = 8  # chunks (0.256 s): a window's speech probability is its most speech-like span's mean


class SileroVAD(nn.Module):
    """16 kHz waveforms ``[B, 64 + n * 512]`` -> per-window (128-d mean LSTM state, speech logit)."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def chunk_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Speech probability of every 32 ms chunk ``[B, n]`` and the LSTM states ``[B, n, 128]``."""
        chunks = x.unfold(1, CHUNK + CONTEXT, CHUNK)
        b, n, width = chunks.shape
        y = F.pad(chunks.reshape(b * n, 1, width), (0, CONTEXT), mode="reflect")
        y = self.stft_conv(y)
        y = torch.sqrt(y[:, :129] ** 2 + y[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            y = F.relu(conv(y))
        feats = y.squeeze(-1).reshape(b, n, 128)
        h = c = feats.new_zeros(b, 128)
        states = []
        for i in range(n):
            h, c = self.lstm_cell(feats[:, i], (h, c))
            states.append(h)
        hidden = F.relu(torch.stack(states, dim=1))
        probs = torch.sigmoid(self.final_conv(hidden.transpose(1, 2))).squeeze(1)
        return probs, hidden

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, hidden = self.chunk_probs(x)
        span = min(SPAN, probs.shape[1])
        best = F.avg_pool1d(probs.unsqueeze(1), span, stride=1).amax(dim=(1, 2))
        return hidden.mean(dim=1), torch.logit(best, eps=1e-6).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[1]


class SpeechTransform:
    """16 kHz mono waveform -> ``[1, 64 + n * 512]``: 64 zeros of context in front, zero-padded to whole chunks."""

    sample_rate = SAMPLE_RATE

    def __call__(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(waveform, dtype=torch.float32).flatten()
        n = max(1, -(-x.numel() // CHUNK))
        return F.pad(x, (CONTEXT, n * CHUNK - x.numel())).unsqueeze(0)


def silero_file() -> Path:
    """The TorchScript model inside the installed ``silero-vad`` package."""
    spec = importlib.util.find_spec("silero_vad")
    path = Path(spec.origin).parent / "data" / "silero_vad.jit" if spec and spec.origin else None
    if path is None or not path.exists():
        raise WeightsUnavailable(
            "silero-vad weights come from the PyPI package 'silero-vad': run `pip install silero-vad==6.2.3`"
        )
    return path


def _state_dict_from_jit(path: Path) -> dict[str, torch.Tensor]:
    """The 16 kHz model's tensors under this module's names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, the file is what ships
        scripted = torch.jit.load(str(path), map_location="cpu")
    state = {}
    for key, value in scripted._model.state_dict().items():
        if key.startswith("encoder."):
            _, i, _, param = key.split(".")
            key = f"conv{int(i) + 1}.{param}"
        else:
            key = {
                "stft.forward_basis_buffer": "stft_conv.weight",
                "decoder.decoder.2.weight": "final_conv.weight",
                "decoder.decoder.2.bias": "final_conv.bias",
            }.get(key, key.replace("decoder.rnn.", "lstm_cell."))
        state[key] = value.clone()
    return state


def _load() -> dict[str, torch.Tensor]:
    return converted(SileroVAD_Weights.V6_16K.id, lambda: _state_dict_from_jit(silero_file()))


class SileroVAD_Weights(WeightsEnum):
    V6_16K = Weights(
        id="silero-vad-6.2.3-16k-jit",
        load=_load,
        transforms=SpeechTransform,
        meta={
            "modality": "speech",
            "label_space": "speech",
            "categories": ["speech"],
            "activation": "sigmoid",
            "input": "16 kHz mono -> 32 ms chunks; window = best 0.256 s mean",
            "embedding_dim": 128,
            "num_params": 309_633,
            "offline": "silero-vad",
            "license": "MIT (PyPI silero-vad)",
            "source": "PyPI silero-vad 6.2.3: silero_vad/data/silero_vad.jit (16 kHz model), cached as safetensors",
        },
    )
    DEFAULT = V6_16K


def silero_vad(*, weights: SileroVAD_Weights | None = SileroVAD_Weights.DEFAULT) -> SileroVAD:
    """Build the speech gate; ``weights=None`` gives a random network."""
    return loaded(SileroVAD(), weights)
