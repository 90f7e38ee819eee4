"""Where records go. Sinks see plain dicts (records), never tensors."""
from .jsonl import JsonlSink

__all__ = ["JsonlSink"]
