"""The labeling package's structure: no import circle, and a resume key derived from the config schema."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from streamclf.config import Config
from streamclf.labeling.common import identity, no_output_fields

PACKAGE = Path(__file__).resolve().parents[1] / "streamclf" / "labeling"


def _imports(module: Path) -> set[str]:
    """The sibling modules of ``labeling`` that ``module`` imports (``from .x import``, ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found


def test_engines_and_outputs_import_only_common():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    assert graph["common"] == set()
    assert graph["outputs"] <= {"common"}
    assert graph["local"] <= {"common"} and graph["ray"] <= {"common"}
    assert {"local", "ray"}.isdisjoint(graph["__init__"])  # chosen by name from ENGINES, imported when run


def test_importing_common_loads_no_engine():
    code = (
        "import sys, streamclf.labeling.common; "
        "print(sorted(m for m in sys.modules if m.startswith('streamclf.labeling')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "streamclf.labeling.local" not in out and "streamclf.labeling.ray" not in out


def test_resume_key_leaves_out_exactly_the_marked_fields():
    # The fields label's resume key has always left out; a field added to the config is in the key
    # unless it is marked json_schema_extra={"output": False}.
    assert no_output_fields() == dict.fromkeys(
        ("sources", "sinks", "alerts", "output_dir", "device", "queue_size", "batch_windows", "batch_timeout"), True
    )
    base = Config()
    for update in ({"device": "cpu"}, {"queue_size": 3}, {"output_dir": "elsewhere"}):
        assert identity(base.model_copy(update=update)) == identity(base)
    assert identity(base.model_copy(update={"window": base.window.model_copy(update={"hop": 1.0})})) != identity(base)


def test_unknown_engine_names_the_choices(tmp_path):
    from streamclf.labeling import label_files

    try:
        label_files([str(tmp_path)], tmp_path / "out", engine="spark")
    except ValueError as e:
        assert str(e) == "unknown engine 'spark'; choose local or ray"
    else:
        raise AssertionError("an unknown engine was accepted")


def test_label_and_train_take_the_same_files_from_a_folder(tmp_path):
    # train's list lacked .m2ts, .wmv, .3gp and .oga, which label took: one list now, the union.
    from streamclf.labeling.common import find_inputs
    from streamclf.train import labeled_clips

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for name in ("a.mp4", "b.m2ts", "c.wmv", "d.3gp", "e.oga", "f.opus", "notes.txt"):
            (tmp_path / label / name).write_bytes(b"")
    took = sorted(p.relative_to(tmp_path).as_posix() for p, _ in labeled_clips(tmp_path))
    assert took == sorted(j.rel for j in find_inputs([str(tmp_path)]))
    assert len(took) == 12 and not any(t.endswith(".txt") for t in took)


def test_cli_offers_the_registered_engines():
    # The CLI lists the choices itself (its --help must not import the package); kept equal here.
    from streamclf.cli import build_parser
    from streamclf.labeling import ENGINES

    label = build_parser()._subparsers._group_actions[0].choices["label"]  # type: ignore[union-attr]
    (engine,) = [a for a in label._actions if a.dest == "engine"]
    assert list(engine.choices) == list(ENGINES)
