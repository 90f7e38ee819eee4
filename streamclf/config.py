"""Typed configuration, validated once at start; unknown keys are errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WindowConfig(_Strict):
    length: float = Field(2.0, gt=0, description="window length, seconds")
    hop: float = Field(0.5, gt=0, description="step between window starts, seconds")
    fps: float = Field(4.0, gt=0, le=120, description="video frames sampled per second (by PTS)")
    min_audio: float = Field(0.48, ge=0, description="seconds of audio a window needs to count as having audio")
    max_side: int = Field(640, ge=32, description="decoded frames are scaled so the long side is at most this")

    @model_validator(mode="after")
    def _hop_fits(self) -> "WindowConfig":
        if self.hop > self.length:
            raise ValueError(f"hop ({self.hop}) must not exceed length ({self.length})")
        return self


class ModalityConfig(_Strict):
    encoder: str
    pool: Literal["mean", "max"] = Field(description="temporal pooling of scores and embeddings in a window")
    weight: float = Field(0.5, ge=0, description="weight in decision-level fusion")
    enabled: bool = True


class AudioConfig(ModalityConfig):
    encoder: str = "yamnet"
    pool: Literal["mean", "max"] = "max"  # short sounds (a bark) fill one patch of several


class VideoConfig(ModalityConfig):
    encoder: str = "efficientnet_lite0"
    pool: Literal["mean", "max"] = "mean"


class FusionConfig(_Strict):
    categories: str | None = Field(None, description="category map YAML; default: the built-in map")
    head: str | None = Field(None, description="trained head folder (streamclf train); replaces the category map")
    top_k: int = Field(5, ge=1, le=50)
    smoothing: float = Field(0.5, gt=0, le=1, description="EMA alpha across windows; 1 = off")


class Config(_Strict):
    window: WindowConfig = WindowConfig()
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()
    fusion: FusionConfig = FusionConfig()
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    queue_size: int = Field(64, ge=1, description="items per stage queue")
    batch_windows: int = Field(8, ge=1, description="windows per worker batch, across sources")
    batch_timeout: float = Field(0.02, ge=0, description="seconds the worker waits to fill a batch")


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the file and key."""


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read YAML (if given), apply dotted overrides like ``window.fps=2``, validate."""
    where = str(path) if path else "config"
    data: dict[str, Any] = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{where}: cannot read: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: top level must be a mapping")
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{where}: {key}: {first['msg']}{more}") from e
