"""streamclf: real-time audio-visual classification of files, cameras and streams."""
from typing import Any

from .config import Config, load_config

__all__ = ["Config", "Pipeline", "iter_records", "label_files", "load_config", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The pipeline pulls in torch: load it when first asked for, so decode-only processes stay light."""
    if name in ("Pipeline", "run"):
        from . import pipeline
        return getattr(pipeline, name)
    if name in ("label_files", "iter_records"):
        from . import batch
        return getattr(batch, name)
    raise AttributeError(f"module 'streamclf' has no attribute {name!r}")
