"""A decode process that hangs or dies costs its own file, never the batch; a rerun finishes the job."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[2]


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_a_file_that_never_delivers_data_fails_alone(tmp_path: Path) -> None:
    """A named pipe with no writer blocks FFmpeg's open() for ever: the watchdog kills and replaces the decoder."""
    from streamclf import load_config
    from streamclf.batch import label_files

    first, last = shared("media/grid/bbaf2n.mpg"), shared("media/grid/brbk7n.mpg")
    stuck = tmp_path / "stuck.mpg"
    os.mkfifo(stuck)
    errors: list[str] = []
    config = load_config(**{"sources.file_timeout": 10})
    rows = label_files([str(first), str(stuck), str(last)], tmp_path / "out", config, workers=1, progress=False,
                       on_error=errors.append)
    status = {Path(r.path).name: r.status for r in rows}
    assert status == {"bbaf2n.mpg": "ok", "stuck.mpg": "error", "brbk7n.mpg": "ok"}
    assert errors == [f"{stuck}: decoding made no progress for 10s"]


def _decode_children(pid: int) -> list[int]:
    """The label process's decode processes (not Ray's helpers)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"streamclf.decode_worker" in cmd:
                kids.append(int(child))
    return kids


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it ended meanwhile
        return False


def test_a_killed_decode_process_fails_its_file_and_a_rerun_completes(tmp_path: Path) -> None:
    long = shared("media/bbb_360p_60s.mp4")
    short = [shared("media/grid/bbaf2n.mpg"), shared("media/grid/brbk7n.mpg")]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "streamclf", "label", str(long), *map(str, short), "--out", str(out),
           "--no-progress", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for kid in _decode_children(proc.pid):
            if _has_open(kid, long):  # decoding the 60 s clip (its windows wait for inference)
                os.kill(kid, signal.SIGKILL)
                killed = kid
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no decode process seen"
    assert proc.returncode == 1
    rows = _summary(out)
    assert rows["bbb_360p_60s.mp4"]["status"] == "error"
    assert "the decoding process died (exit code -9)" in rows["bbb_360p_60s.mp4"]["error"]
    assert [rows[p.name]["status"] for p in short] == ["ok", "ok"]
    assert stderr.count("streamclf: error:") == 1
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = _summary(out)
    assert {n: (r["status"], r["resumed"]) for n, r in rows.items()} == {
        "bbb_360p_60s.mp4": ("ok", "False"), "bbaf2n.mpg": ("ok", "True"), "brbk7n.mpg": ("ok", "True")}
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
