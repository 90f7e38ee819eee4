"""streamclf label --engine ray: on a local 2-CPU Ray, the same output bytes as the local engine on several
kinds of file (MPEG-PS, Matroska H.264 + Opus, audio-only WAV, a cut file), bad files as errors in both, whether a
file's windows travel in the dataset or the actor decodes it."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamclf.config import load_config
from streamclf.labeling import label_files
from streamclf.labeling import ray as batch_ray
from streamclf.labeling.common import find_inputs, identity
from streamclf.labeling.ray import RayMissing, plan, run_ray
from tests.conftest import shared

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),  # Ray's own
]

GOOD = ["a.mpg", "sub/b.mpg", "pancake.mkv", "dog.wav"]
CUT = ["cut.mkv"]  # the first 60% of the pancake clip: labeled as far as it goes, "partial"
BAD = ["x.mp4"]


@pytest.fixture(scope="module", autouse=True)
def _ray_env() -> Iterator[None]:
    """Ray >= 2.5x turns on token auth for a local Ray (a token in ~/.ray, the mode kept in this process), so a
    later join of the test's own head would disagree with it: these throwaway clusters all run without."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = sorted(shared("media/grid").glob("*.mpg"))
    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    shutil.copy(grid[0], root / "a.mpg")
    shutil.copy(grid[1], root / "sub" / "b.mpg")
    pancake = shared("media/flipping_a_pancake.mkv")
    shutil.copy(pancake, root / "pancake.mkv")
    data = pancake.read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    shutil.copy(shared("sounds/scratch/Animal/Dog1.wav"), root / "dog.wav")
    (root / "x.mp4").write_text("not a video\n")
    return root


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "summary.csv", "summary.json")
    }


@pytest.fixture(scope="module")
def local(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any], list[str]]:
    out, errors = tmp_path_factory.mktemp("local"), []
    rows = label_files([str(folder)], out, workers=1, progress=False, on_error=errors.append)
    return out, rows, errors


def _label_ray(folder: Path, out: Path, monkeypatch: pytest.MonkeyPatch, errors: list[str]) -> list[Any]:
    """``label_files(engine="ray")`` on a local Ray of 2 CPUs, whatever the machine has."""
    monkeypatch.setattr(batch_ray, "run_ray", functools.partial(batch_ray.run_ray, num_cpus=2))
    return label_files([str(folder)], out, workers=2, progress=False, on_error=errors.append, engine="ray")


def test_ray_engine_writes_the_local_engines_bytes(
    folder: Path, local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray", reason="the ray engine needs Ray: pip install 'streamclf[ray]'")
    ref, ref_rows, ref_errors = local
    out, errors = tmp_path / "ray", []
    rows = _label_ray(folder, out, monkeypatch, errors)
    outputs = _outputs(out)
    assert sorted(outputs) == sorted(
        f"{rel}{ext}" for rel in GOOD + CUT for ext in (".jsonl", ".segments.json", ".vtt")
    )
    assert outputs == _outputs(ref)  # byte for byte: records, ids, segments, subtitles
    assert all(json.loads(line)["labels"] for line in outputs["a.mpg.jsonl"].decode().splitlines())
    assert rows == ref_rows  # the summary rows, the bad file's error message included
    assert {r.rel: r.status for r in rows} == {**dict.fromkeys(GOOD, "ok"), "cut.mkv": "partial", "x.mp4": "error"}
    assert sorted(errors) == sorted(ref_errors) and len(errors) == 2  # in the order files finish
    assert str(folder / "cut.mkv") in min(errors) and str(folder / "x.mp4") in max(errors)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((ref / "summary.json").read_text())
    assert not (out / ".partial").exists()
    import ray

    assert not ray.is_initialized()  # the local Ray it started is shut down


HEAD = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes our stdin
ray.shutdown()
"""


@pytest.fixture
def cluster() -> Iterator[str]:
    """A running 2-CPU Ray 'cluster' in another process, as `ray start --head` would leave; yields its address."""
    pytest.importorskip("ray", reason="the ray engine needs Ray: pip install 'streamclf[ray]'")
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = head.stdout.readline().strip()  # type: ignore[union-attr]
        assert address, "the Ray head did not start"
        yield address
        assert head.poll() is None, "the engine must leave a cluster it joined running"
    finally:
        head.stdin.close()  # type: ignore[union-attr]
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(10)


def test_joining_a_cluster_whose_actors_decode_the_files_gives_the_same_records(
    folder: Path, local, cluster: str
) -> None:
    """--ray-address, and row_bytes=0: no file fits in a row, so each actor decodes its files chunk by chunk."""
    import ray

    ref = local[0]
    jobs = find_inputs([str(folder)])
    from streamclf.resolve import resolve_config

    config = resolve_config(load_config())  # what label_files runs with: the video encoder settles the frame size
    got = {
        jobs[i].rel: (records, end)
        for i, records, end in run_ray(
            jobs, list(range(len(jobs))), config, identity(config), address=cluster, row_bytes=0
        )
    }
    assert not ray.is_initialized()  # disconnected from the cluster (which the fixture checks is still up)
    assert sorted(got) == sorted(GOOD + CUT + BAD)
    for rel in GOOD + CUT:
        records, end = got[rel]
        assert not end["fatal"] and end["duration"] > 0
        lines = (ref / f"{rel}.jsonl").read_text().splitlines()
        assert [json.dumps(r, ensure_ascii=False) for r in records] == lines
    records, end = got["x.mp4"]
    assert end["fatal"] and records == [] and end["errors"][-1].startswith(f"{folder / 'x.mp4'}: ")


def test_sizes_leave_cpus_for_decoding() -> None:
    assert plan({"CPU": 2.0}) == {"actors": 1, "actor_cpus": 1.0, "actor_gpus": 0, "decode_cpus": 1.0}
    assert plan({"CPU": 1.0}) == {"actors": 1, "actor_cpus": 0.5, "actor_gpus": 0, "decode_cpus": 0.5}
    assert plan({"CPU": 8.0})["actors"] == 6
    assert plan({"CPU": 32.0, "GPU": 4.0}) == {"actors": 4, "actor_cpus": 1.0, "actor_gpus": 1, "decode_cpus": 1.0}
    sizes = plan({"CPU": 4.0, "GPU": 4.0})
    assert sizes["actors"] == 4 and sizes["actors"] * sizes["actor_cpus"] + sizes["decode_cpus"] <= 4.0


def test_missing_ray_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayMissing, match=r"^the ray engine needs Ray: pip install 'streamclf\[ray\]'$"):
        run_ray([], [], None, "")  # type: ignore[arg-type]
