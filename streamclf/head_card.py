"""A head's card (``card.yaml`` beside ``head.safetensors``) as a typed model.

The card says what the head is (its method and the settings that rebuild it),
what it expects at run time (encoder weights, window, pooling, audio
features) and what it measured. Reading it through one strict model means a
misspelt or unknown key, or a wrong type, is one line naming the file,
instead of a KeyError deep in the pipeline or a setting silently ignored.
The on-disk keys are the ones ``train`` has always written, so every
existing head loads unchanged. It lives outside ``fusion/`` so that reading a
card (the config is resolved from it before anything loads) never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import WindowConfig

CARD = "card.yaml"


class HeadSpec(BaseModel):
    """The constructor arguments that rebuild the fitted head; a method's own settings (``net``, ``hidden``,
    ``rule`` ...) are extra keys, checked by the method itself when the head is built."""

    model_config = ConfigDict(extra="allow")

    method: str
    modalities: list[str]
    classes: list[str]
    dims: dict[str, int]
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        """The method's own settings and the seed: what ``build_head`` takes after the four named ones."""
        return {"seed": self.seed, **(self.model_extra or {})}


class HeadCard(BaseModel):
    """Everything ``card.yaml`` may hold; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    head: HeadSpec
    params: int | None = Field(None, description="trainable numbers in the head")
    encoders: dict[str, str] = Field(default_factory=dict, description="modality -> encoder weights id it was fit on")
    window: WindowConfig | None = Field(None, description="the window the head was trained on; run uses it")
    pool: dict[str, str] = Field(default_factory=dict, description="modality -> pooling over a window")
    audio_features: str | None = Field(None, description="extra audio features recipe (streamclf.audio_features)")
    data: dict[str, Any] = Field(default_factory=dict, description="what it was trained on")
    metrics: dict[str, Any] = Field(default_factory=dict, description="held-out figures")
    warnings: list[str] = Field(default_factory=list)
    created: str | None = None

    @classmethod
    def read(cls, folder: str | Path) -> HeadCard:
        """The card of the head in ``folder``; every problem is one ValueError line naming the file."""
        path = Path(folder) / CARD
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file (a head folder holds {CARD} and its weights)") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: unreadable head card: {str(e).splitlines()[0]}") from None
        return cls.parse(doc, path)

    @classmethod
    def parse(cls, doc: object, where: str | Path) -> HeadCard:
        """Validate a card's content; the first problem as one line: ``where: key.path: what is wrong``."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: a head card is a mapping of keys, got {type(doc).__name__}")
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(map(str, err["loc"])) or "card"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ValueError(f"{where}: {key}: {what}{more}") from None

    def dump(self) -> dict[str, Any]:
        """The card as plain data in the on-disk layout (keys that were not given stay out)."""
        return self.model_dump(mode="json", exclude_unset=True)
