"""streamclf: real-time audio-visual classification of files, cameras and streams."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batch import iter_records, label_files
    from .config import Config, load_config
    from .pipeline import Pipeline, run

__all__ = ["Config", "Pipeline", "iter_records", "label_files", "load_config", "run"]
__version__ = "0.1.0"

# Each name is loaded when first asked for: the pipeline pulls in torch (seconds), and even the
# config's pydantic is more than `streamclf --help` or a decode-only process needs.
_HOME = {"Config": "config", "load_config": "config", "Pipeline": "pipeline", "run": "pipeline",
         "label_files": "batch", "iter_records": "batch"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'streamclf' has no attribute {name!r}")
