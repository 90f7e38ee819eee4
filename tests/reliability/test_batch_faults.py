"""A decode process that hangs or dies costs its own file, never the batch; a rerun finishes the job; a killed
`label` leaves no decode process behind and nothing printed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[2]


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_a_file_that_never_delivers_data_fails_alone(tmp_path: Path) -> None:
    """A named pipe with no writer blocks FFmpeg's open() for ever: the watchdog kills and replaces the decoder."""
    from streamclf import load_config
    from streamclf.labeling import label_files

    first, last = shared("media/grid/bbaf2n.mpg"), shared("media/grid/brbk7n.mpg")
    stuck = tmp_path / "stuck.mpg"
    os.mkfifo(stuck)
    errors: list[str] = []
    config = load_config(**{"sources.file_timeout": 10})
    rows = label_files(
        [str(first), str(stuck), str(last)], tmp_path / "out", config, workers=1, progress=False, on_error=errors.append
    )
    status = {Path(r.path).name: r.status for r in rows}
    assert status == {"bbaf2n.mpg": "ok", "stuck.mpg": "error", "brbk7n.mpg": "ok"}
    assert errors == [f"{stuck}: decoding made no progress for 10s"]


def decode_children(pid: int) -> list[int]:
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
    cmd = [
        sys.executable,
        "-m",
        "streamclf",
        "label",
        str(long),
        *map(str, short),
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "1",
        "--detector",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for kid in decode_children(proc.pid):
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
        "bbb_360p_60s.mp4": ("ok", "False"),
        "bbaf2n.mpg": ("ok", "True"),
        "brbk7n.mpg": ("ok", "True"),
    }
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def alive(pid: int) -> bool:
    """Running or sleeping, not gone and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_label_and_check(cmd: list[str], out: Path, tmp_path: Path, ready: Callable[[list[int]], bool]) -> set[str]:
    """Start ``cmd``, SIGKILL it once ``ready(decode pids)``; its decode processes must be gone within 5 s and
    nothing printed after the kill. Returns the files done before the kill."""
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=err)
    kids: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kids = decode_children(proc.pid)
        if kids and ready(kids):
            break
        time.sleep(0.1)
    assert proc.poll() is None and kids, "label ended before the kill"
    proc.kill()
    proc.wait(10)
    printed = log.stat().st_size
    gone = time.monotonic() + 5.0
    while any(alive(k) for k in kids) and time.monotonic() < gone:
        time.sleep(0.1)
    assert not [k for k in kids if alive(k)], "decode processes outlived the killed label"
    time.sleep(1.0)
    assert log.stat().st_size == printed, f"printed after the kill: {log.read_text()[printed:]!r}"
    return {p.name for p in out.glob("*.segments.json")}


def test_killing_label_ends_its_decode_processes_quietly_and_a_rerun_completes_once(tmp_path: Path) -> None:
    """Issue 20: SIGKILL mid-batch, with decoders busy on a long file (their sends to the dead parent
    would break) and one blocked opening a FIFO that no one writes (only the kernel can end it)."""
    grid = [shared("media/grid/bbaf2n.mpg"), shared("media/grid/brbk7n.mpg")]
    long = shared("media/bbb_360p_60s.mp4")
    folder = tmp_path / "in"
    folder.mkdir()
    for clip in [*grid, long]:
        (folder / clip.name).write_bytes(clip.read_bytes())
    stuck = tmp_path / "stuck.mpg"
    os.mkfifo(stuck)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "streamclf",
        "label",
        str(folder),
        str(stuck),
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "2",
    ]

    def blocked(kids):
        return any(_waiting_on_fifo(k) for k in kids)

    def busy(kids):
        return any(_has_open(k, folder / long.name) for k in kids)

    done_before = _kill_label_and_check(cmd, out, tmp_path, lambda kids: blocked(kids) and busy(kids))
    rerun = [c for c in cmd if c != str(stuck)]  # the FIFO would only block again
    again = subprocess.run(rerun, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = _summary(out)
    assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys([c.name for c in grid] + [long.name], "ok")
    assert {n for n, r in rows.items() if r["resumed"] == "True"} == {
        n.removesuffix(".segments.json") for n in done_before
    }
    assert again.stderr.count("labeled ") == 1 and "Traceback" not in again.stderr


def _waiting_on_fifo(pid: int) -> bool:
    """A thread of ``pid`` is blocked opening a FIFO that has no writer."""
    try:
        return any((t / "wchan").read_text() == "wait_for_partner" for t in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
