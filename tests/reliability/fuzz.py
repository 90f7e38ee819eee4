"""Coverage-guided fuzzing (atheris/libFuzzer) of the two doors untrusted bytes come through.

    python -m tests.reliability.fuzz config [libFuzzer flags, e.g. -max_total_time=60]
    python -m tests.reliability.fuzz demux  [-max_total_time=60] [CORPUS_DIR]

``config``: YAML text into ``load_config`` and source strings into
``SourceSpec.parse``; only ``ConfigError``/``ValueError`` may come out.
``demux``: bytes as a media file through the decoder thread's own loop;
nothing may escape it, it must always end with ``SourceEnd``, and every
error must be one line. Python code is coverage-instrumented; FFmpeg's C
code is exercised but not instrumented. A crash or a hang (``-timeout``)
ends the run with libFuzzer's report and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["streamclf"]):
    from streamclf.config import ConfigError, load_config
    from streamclf.sources import Decoder, SourceSpec
    from streamclf.stages import Feed
    from streamclf.types import SourceEnd, SourceError

SCRATCH = Path(tempfile.mkdtemp(prefix="streamclf-fuzz-"))


def config_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(len(data))
    path = SCRATCH / "config.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e), f"a config error must be one line: {e!r}"
    for line in text.splitlines()[:4]:
        try:
            SourceSpec.parse(line)
        except ValueError:
            pass


def demux_input(data: bytes) -> None:
    path = SCRATCH / "input.bin"
    path.write_bytes(data)
    feed = Feed(100_000, droppable=lambda item: False)
    Decoder(SourceSpec(url=str(path), name="fuzz"), feed, fps=4.0, max_side=64).run()  # in this thread
    items = []
    while not feed.empty():
        items.append(feed.get())
    assert isinstance(items[-1], SourceEnd), items[-1:]
    for item in items:
        if isinstance(item, SourceError):
            assert "\n" not in item.message, item.message


TARGETS = {"config": config_input, "demux": demux_input}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: python -m tests.reliability.fuzz {{{'|'.join(TARGETS)}}} [libFuzzer flags] [CORPUS]")
    target = TARGETS[sys.argv.pop(1)]
    os.environ.setdefault("STREAMCLF_CACHE", str(SCRATCH / "cache"))
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
