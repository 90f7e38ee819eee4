"""`streamclf train`'s checks before any clip is embedded, and what it reports after training."""
from __future__ import annotations

from pathlib import Path

import pytest

from streamclf import train as train_module
from streamclf.train import check_fusion, fusion_warnings, labeled_clips, report


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.wav").write_bytes(b"")
    return root


@pytest.mark.parametrize("fusion, message", [
    ("gatd", "unknown fusion method 'gatd'; closest: gated"),
    ("mkl", "'mkl' keeps its training set and cannot be saved as a head"),
    ("cca", "'cca' keeps its training set and cannot be saved as a head"),
])
def test_bad_fusion_fails_before_any_clip_is_embedded(tmp_path, monkeypatch, fusion, message):
    data = _folder(tmp_path / "data", {"a": 1, "b": 1})

    def embed(*args, **kw):
        raise AssertionError("embedded clips before checking --fusion")

    monkeypatch.setattr(train_module, "clip_embeddings", embed)
    with pytest.raises(ValueError, match=message):
        train_module.train(data, fusion, tmp_path / "head")
    with pytest.raises(ValueError, match=message):
        check_fusion(fusion)
    check_fusion("gated")


def test_dataset_errors_name_the_class_or_row_at_fault(tmp_path):
    data = _folder(tmp_path / "data", {"cat": 2, "dog": 0})
    with pytest.raises(ValueError, match=r"data/dog: class folder 'dog' has no media files"):
        labeled_clips(data)
    one = _folder(tmp_path / "one", {"cat": 2})
    with pytest.raises(ValueError, match=r"found only class 'cat' \(2 clip\(s\)\); a folder needs one sub-folder"):
        labeled_clips(one)
    csv = tmp_path / "clips.csv"
    (tmp_path / "a.wav").write_bytes(b"")
    csv.write_text("path,label\na.wav,cat\nmissing.wav,dog\n")
    with pytest.raises(ValueError, match=r"clips.csv:3: class 'dog': .*missing.wav: no such file"):
        labeled_clips(csv)
    assert labeled_clips(_folder(tmp_path / "ok", {"cat": 1, "dog": 2})) == [
        (tmp_path / "ok" / "cat" / "0.wav", "cat"), (tmp_path / "ok" / "dog" / "0.wav", "dog"),
        (tmp_path / "ok" / "dog" / "1.wav", "dog")]


def test_report_is_a_table_and_warns_when_fusion_is_worse_than_one_modality():
    metrics = {"held_out_clips": 3, "accuracy": {"all": 0.77, "audio only": 0.5, "video only": 1.0}}
    card = {"metrics": metrics, "warnings": fusion_warnings(metrics)}
    assert report(card).splitlines() == [
        "held out clips: 3",
        "modalities  held-out accuracy",
        "all         0.770",
        "audio only  0.500",
        "video only  1.000",
        "warning: the head validates worse with all modalities (0.770) than with video only (1.000); "
        "the other modality hurts: try --fusion video, more clips, or another method"]
    assert fusion_warnings({"accuracy": {"all": 1.0, "audio only": 0.6, "video only": 1.0}}) == []
    assert report({"metrics": {}}) == "no held-out metrics (fewer than 5 clips)"
