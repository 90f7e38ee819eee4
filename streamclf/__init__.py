"""streamclf: real-time audio-visual classification of files, cameras and streams."""
from .config import Config, load_config
from .pipeline import Pipeline, run

__all__ = ["Config", "Pipeline", "load_config", "run"]
__version__ = "0.1.0"
