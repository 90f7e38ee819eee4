"""Library code speaks through the ``streamclf`` logger (an embedding program can silence or redirect it); only
the CLI configures it, and only the CLI and the dashboard write to the terminal themselves."""

from __future__ import annotations

import ast
import errno
import logging
from pathlib import Path

import pytest

from streamclf.cli import _log_levels, _log_to_stderr, build_parser
from streamclf.records import StatusRecord
from streamclf.sinks.jsonl import JsonlSink

PACKAGE = Path(__file__).resolve().parents[1] / "streamclf"
TERMINAL = {"cli.py", "commands.py", "dashboard.py"}  # the command line and the live view: their output is the point


def _failing_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JsonlSink:
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("streamclf.sinks.jsonl.os.write", full)
    return JsonlSink(tmp_path / "records.jsonl")


def test_a_sink_that_is_down_warns_through_the_streamclf_logger_not_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    sink = _failing_jsonl(tmp_path, monkeypatch)
    sink.write(StatusRecord("cam", "live", id="r1"))
    [record] = [r for r in caplog.records if r.name.startswith("streamclf")]
    assert (record.name, record.levelno) == ("streamclf.sinks.jsonl", logging.WARNING)
    assert record.getMessage().startswith(f"jsonl: {tmp_path / 'records.jsonl'}: cannot write (No space left")
    assert capfd.readouterr().err == ""  # nothing printed behind the logger's back
    caplog.clear()
    logging.getLogger("streamclf").setLevel(logging.CRITICAL)  # what an embedding program does to silence it
    try:
        _failing_jsonl(tmp_path, monkeypatch).write(StatusRecord("cam", "live", id="r2"))
    finally:
        logging.getLogger("streamclf").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if r.name.startswith("streamclf")]


def test_no_library_module_calls_print() -> None:
    calls = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in TERMINAL
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not calls, f"library code prints (log through logging.getLogger(__name__) instead): {calls}"


@pytest.mark.parametrize(
    ("argv", "shown", "hidden"),
    [
        (["run", "--no-dashboard"], ["streamclf.pipeline", "streamclf.pipeline.status", "streamclf.sinks.jsonl"], []),
        (["run", "--no-dashboard", "--quiet"], [], ["streamclf.pipeline", "streamclf.sinks.jsonl"]),
        # the dashboard shows what loads and the sources' states; a sink going down or coming back it does not
        (["run"], ["streamclf.sinks.jsonl"], ["streamclf.pipeline", "streamclf.pipeline.status"]),
    ],
)
def test_the_cli_prints_each_logged_line_once_with_its_prefix_and_puts_the_logger_back(
    argv: list[str], shown: list[str], hidden: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Info-level lines (what loads, a state change, a sink back up) by command, and a sink that is down always:
    one ``streamclf:`` line each."""
    logger = logging.getLogger("streamclf")
    before = logger.handlers[:], logger.propagate, logger.level
    with _log_to_stderr(_log_levels(build_parser().parse_args(argv))):
        for name in shown + hidden:
            logging.getLogger(name).info("from %s", name)
        logging.getLogger("streamclf.sinks.jsonl").warning("jsonl: out.jsonl: cannot write")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"streamclf: from {name}" for name in shown] + ["streamclf: jsonl: out.jsonl: cannot write"]
    assert (logger.handlers, logger.propagate, logger.level) == before
    assert all(logging.getLogger(n).level == logging.NOTSET for n in shown + hidden)
