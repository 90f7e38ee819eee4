"""Where records go. Sinks see records (``records.Record``: window, status, alert, timings), never tensors.

Every sink has ``write(record)`` and ``close()``; the network ones also ``stats()``.
"""

from .jsonl import JsonlSink
from .mqtt import MqttSink
from .sqlite import SqliteSink, format_events, query_events, record_key
from .webhook import WebhookSink

__all__ = ["JsonlSink", "MqttSink", "SqliteSink", "WebhookSink", "format_events", "query_events", "record_key"]
