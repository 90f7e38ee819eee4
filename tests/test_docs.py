"""Every command the README and docs/ show must parse: a renamed flag or verb breaks this test, not a reader.

streamclf commands (fenced shell blocks) go through the CLI's own parser without running; benchmark scripts
named anywhere in the docs (`benchmarks/NAME.py --flag ...`) must exist and know every flag they are shown with.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from streamclf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_lines(page: Path) -> list[str]:
    lines = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), re.S):
        if lang in ("bash", "sh", "shell"):
            lines += [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def _streamclf_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line in _shell_lines(page):
            for part in re.split(r"\s*&&\s*", line):
                words = shlex.split(part, comments=True)
                if words and words[0].endswith("streamclf"):
                    found.append((f"{page.name}: {part.strip()}", words[1:]))
                elif len(words) > 1 and words[0].endswith("python") and words[1] == "run_stream.py":
                    found.append((f"{page.name}: {part.strip()}", ["run", *words[2:]]))
    return found


COMMANDS = _streamclf_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 30, "the docs' commands were not found (did the code-block format change?)"


@pytest.mark.parametrize("shown, argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_streamclf_command_in_the_docs_parses(shown: str, argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{shown}: does not parse (exit {e.code})")


def _benchmark_uses() -> dict[str, set[str]]:
    """Script -> flags shown with it, from code blocks and inline code alike."""
    uses: dict[str, set[str]] = {}
    for page in PAGES:
        for script, rest in re.findall(r"benchmarks/(\w+\.py)([^`\n]*)", page.read_text()):
            uses.setdefault(script, set()).update(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest))
    return uses


# Each script's --help, all in one interpreter (torch is imported once, not once a script): exit code and output.
_HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    buf, code = io.StringIO(), 0
    sys.argv = [path, "--help"]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        code = e.code or 0
    except BaseException as e:
        code = f"{type(e).__name__}: {e}"
    out[path] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_every_benchmark_the_docs_name_exists_and_knows_its_flags() -> None:
    uses = _benchmark_uses()
    assert uses, "no benchmark named in the docs"
    paths = {}
    for script in sorted(uses):
        path = ROOT / "benchmarks" / script
        assert path.exists(), f"docs name benchmarks/{script}, which does not exist"
        source = path.read_text()  # a script without a parser would run (and overwrite its results) on --help
        assert "ArgumentParser" in source or "streamclf.cli" in source, f"benchmarks/{script} takes no --help"
        paths[script] = str(path)
    proc = subprocess.run(
        [sys.executable, "-c", _HELP_ALL, *paths.values()], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    helps = json.loads(proc.stdout.splitlines()[-1])
    for script, flags in sorted(uses.items()):
        code, text = helps[paths[script]]
        assert code == 0 and "usage:" in text, f"benchmarks/{script} --help: {code}"
        unknown = {f for f in flags if f not in text}
        assert not unknown, f"docs show benchmarks/{script} with {sorted(unknown)}, which it does not take"
