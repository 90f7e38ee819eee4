"""streamclf: real-time audio-visual classification of files, cameras and streams."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

# torch's OpenMP threads spin between operations while they wait for each other. With inference on the
# calling thread (label) of a busy 2-core machine, a teammate is often descheduled and the spinning
# took 2-4x the CPU (label ran at 0.36x the speed of run); waiting passively costs nothing measurable
# when the machine is idle. Only read when torch loads, so set here, first; a value you set wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from .config import Config, load_config
    from .labeling import iter_records, label_files
    from .pipeline import Pipeline, run

__all__ = ["Config", "Pipeline", "iter_records", "label_files", "load_config", "run"]
__version__ = "0.1.0"

# Each name is loaded when first asked for: the pipeline pulls in torch (seconds), and even the
# config's pydantic is more than `streamclf --help` or a decode-only process needs.
_HOME = {
    "Config": "config",
    "load_config": "config",
    "Pipeline": "pipeline",
    "run": "pipeline",
    "label_files": "labeling",
    "iter_records": "labeling",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'streamclf' has no attribute {name!r}")
