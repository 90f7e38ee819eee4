"""Every fusion method: shapes, mask handling, save/load, and a tiny training run that beats chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamclf.fusion import METHODS, build_head, load_head, save_head

C = 4
DIMS = {"audio": 24, "video": 40}


def _data(n: int, seed: int) -> tuple[dict, dict, np.ndarray]:
    """Audio tells classes {0,1} from {2,3}; video tells {0,2} from {1,3}: only both give all four."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    a_dir = np.random.default_rng(1).normal(size=(2, DIMS["audio"]))
    v_dir = np.random.default_rng(2).normal(size=(2, DIMS["video"]))
    xa = 1.5 * a_dir[y // 2] + rng.normal(size=(n, DIMS["audio"]))
    xv = 1.5 * v_dir[y % 2] + rng.normal(size=(n, DIMS["video"]))
    x = {"audio": xa.astype(np.float32), "video": xv.astype(np.float32)}
    return x, {m: np.ones(n, bool) for m in x}, y


@pytest.fixture(scope="module")
def fitted() -> dict:
    x, present, y = _data(480, 0)
    heads = {}
    for method in METHODS:
        head = build_head(method, ("audio", "video"), [f"c{i}" for i in range(C)], DIMS, seed=0, epochs=15)
        heads[method] = head.fit(x, present, y)
    return heads


@pytest.mark.parametrize("method", list(METHODS))
def test_shapes_and_accuracy(fitted: dict, method: str) -> None:
    head = fitted[method]
    x, present, y = _data(200, 7)
    probs = head.predict_proba(x, present)
    assert probs.shape == (200, C)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4) and (probs >= 0).all()
    acc = (probs.argmax(1) == y).mean()
    # Chance is 0.25 and one modality alone reaches ~0.5. Heads that combine evidence per class reach
    # ~0.9. Majority voting (two voters that each see only a pair of classes), CCA (the modalities'
    # class signals are uncorrelated here, so the shared space has little to keep) and a weighted
    # average that trusts one modality cannot, by construction; they must still beat chance.
    weak = ("audio", "video", "majority_vote", "cca", "weighted_average")
    floor = 0.4 if method in weak else 0.75
    assert acc > floor, f"{method}: accuracy {acc:.2f}"


@pytest.mark.parametrize("method", list(METHODS))
def test_absent_modality_is_ignored_not_zero_filled(fitted: dict, method: str) -> None:
    head = fitted[method]
    x, present, y = _data(100, 3)
    for gone in ("audio", "video"):
        mask = {m: np.full(100, m != gone) for m in present}
        base = head.predict_proba(x, mask)
        garbage = dict(x, **{gone: np.random.default_rng(5).normal(size=x[gone].shape).astype(np.float32) * 50})
        assert np.allclose(head.predict_proba(garbage, mask), base, atol=1e-5), f"{method} read absent {gone}"
        if method == gone:  # a unimodal head without its modality has nothing left
            continue
        # the remaining modality still tells apart the two pairs of classes it can see
        pred = base.argmax(1)
        same = (pred // 2 == y // 2) if gone == "video" else (pred % 2 == y % 2)
        assert same.mean() > 0.7, f"{method} without {gone}"
    none = head.predict_proba(x, {m: np.zeros(100, bool) for m in present})
    assert np.allclose(none, 1.0 / C)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("mkl", "cca")])
def test_save_load_roundtrip(fitted: dict, method: str, tmp_path) -> None:
    head = fitted[method]
    x, present, _ = _data(50, 9)
    save_head(head, tmp_path / method, {"data": {"note": "test"}})
    loaded, card = load_head(tmp_path / method)
    assert card.head.method == method and card.data == {"note": "test"}
    assert np.allclose(loaded.predict_proba(x, present), head.predict_proba(x, present), atol=1e-5)


def test_unsavable_and_bad_head_say_why(fitted: dict, tmp_path) -> None:
    with pytest.raises(ValueError, match="keeps its training set"):
        save_head(fitted["mkl"], tmp_path / "mkl", {})
    with pytest.raises(ValueError, match="not a head folder"):
        load_head(tmp_path)
    with pytest.raises(ValueError, match="unknown fusion method"):
        build_head("nope", ("audio", "video"), ["a", "b"], DIMS)


def test_head_cards_are_checked_keys_and_types_one_line_naming_the_file(fitted: dict, tmp_path) -> None:
    """Issue 19 item 5: a card is a strict model; what train wrote before loads unchanged."""
    import yaml

    from streamclf.head_card import HeadCard

    with pytest.raises(ValueError, match=r"gated/card.yaml: notes: unknown key$"):
        save_head(fitted["gated"], tmp_path / "gated", {"notes": "a typo is refused, never written"})
    assert not (tmp_path / "gated").exists()
    folder = save_head(fitted["gated"], tmp_path / "gated", {"window": {"length": 1.0, "hop": 0.5}})
    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["window"] == {"length": 1.0, "hop": 0.5} and card["head"]["method"] == "gated"  # keys as before
    for bad, message in [
        ({**card, "windwo": {}}, r"card.yaml: windwo: unknown key$"),
        ({**card, "window": {"length": "long"}}, r"card.yaml: window.length: Input should be a valid number"),
        ({**card, "params": [1]}, r"card.yaml: params: Input should be a valid integer"),
        ({k: v for k, v in card.items() if k != "head"}, r"card.yaml: head: Field required$"),
        ([1, 2], r"card.yaml: a head card is a mapping of keys, got list$"),
    ]:
        (folder / "card.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ValueError, match=message) as err:
            load_head(folder)
        assert "\n" not in str(err.value) and str(folder) in str(err.value)
    (folder / "card.yaml").write_text(yaml.safe_dump({**card, "head": {**card["head"], "hiddn": 3}}))
    with pytest.raises(ValueError, match=r"card.yaml: head: .*hiddn"):
        load_head(folder)
    for shipped in sorted(Path(__file__).resolve().parents[1].joinpath("models", "heads").iterdir()):
        assert HeadCard.read(shipped).head.classes == [str(d) for d in range(10)]  # heads made before the model


def test_weights_explain_modalities(fitted: dict) -> None:
    x, present, _ = _data(20, 4)
    for method in ("weighted_sum", "attention", "gated", "weighted_average", "hybrid", "mkl"):
        w = fitted[method].explain(x, present)
        total = sum(w.values())
        assert np.allclose(total, 1.0, atol=1e-4), method
        only_audio = fitted[method].explain(x, {"audio": np.ones(20, bool), "video": np.zeros(20, bool)})
        assert np.allclose(only_audio["video"], 0.0), method


def test_a_reused_fit_is_the_fit_it_replaces() -> None:
    """Decision heads inside a comparison reuse the baselines' fits; the result must not change."""
    from streamclf.fusion import heads

    x, present, y = _data(200, 5)
    classes = [f"c{i}" for i in range(C)]
    alone = build_head("audio", ("audio", "video"), classes, DIMS, seed=3, epochs=5).fit(x, present, y)
    with heads.reuse_fits():
        build_head("audio", ("audio", "video"), classes, DIMS, seed=3, epochs=5).fit(x, present, y)
        vote = build_head("soft_vote", ("audio", "video"), classes, DIMS, seed=3, epochs=5).fit(x, present, y)
        assert len(heads._fits) == 2  # the audio fit once, the video fit once
    assert heads._fits is None
    for k, v in alone.arrays().items():
        assert np.array_equal(vote.unimodal["audio"].arrays()[k], v), k


def test_compare_gives_the_same_table_in_one_or_two_processes() -> None:
    from streamclf.avdigits import AUDIO_CONDITIONS, IMAGE_CONDITIONS, AVDigits
    from streamclf.compare import compare

    x, _, y = _data(240, 6)
    speakers = ["s0", "s1", "s2"]
    data = AVDigits(
        {c: x["audio"] for c in AUDIO_CONDITIONS},
        y,
        np.array(speakers * 80),
        [f"{i}.wav" for i in range(240)],
        {c: x["video"] for c in IMAGE_CONDITIONS},
        y,
        np.arange(240) % 3,
        speakers,
    )
    methods = ["audio", "video", "soft_vote", "hybrid"]
    one = compare(data, methods, hyper={"epochs": 4}, workers=1)
    two = compare(data, methods, hyper={"epochs": 4}, workers=2)
    for m in methods:
        assert [r["fold"] for r in two["runs"][m]] == [0, 1, 2]
        for a, b in zip(one["runs"][m], two["runs"][m], strict=True):
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1 / 80), m
    assert one["summary"]["hybrid"]["accuracy"]["clean"][0] > 0.5  # four classes: chance is 0.25


def test_the_light_catalog_names_every_method_and_the_unsavable_ones():
    """`--help` lists methods from streamclf.catalog (no torch); it must say what METHODS builds."""
    from streamclf.catalog import COMPARE_ONLY, FUSION_METHODS

    assert FUSION_METHODS == tuple(METHODS)
    assert set(COMPARE_ONLY) == {m for m, f in METHODS.items() if not getattr(getattr(f, "func", f), "savable", True)}


def test_comparison_table_gets_the_held_out_speaker_stream_columns(tmp_path) -> None:
    """Measured methods show their mean fused stream accuracy per kind of run (pooled audio, audio features,
    noise); the others keep every cell and show '-'; zero-shot, which cannot name digits, says n/a and why."""
    import json

    from streamclf.compare import held_out_streams, streams_table, table

    bench = tmp_path / "avdigits_stream.json"
    assert held_out_streams(bench) == []

    def run(fused: float, audio: float, video: float) -> dict:
        return {"fused": fused, "audio only": audio, "video only": video}

    old = {s: {"stream": run(f, 0.2, 0.9)} for s, f in (("a", 0.9), ("b", 0.8))}
    new = {
        s: {"stream": run(f, 0.6, 0.9), "stream_noise": run(f - 0.1, 0.3, 0.9)} for s, f in (("a", 0.96), ("b", 0.94))
    }
    bench.write_text(
        json.dumps(
            {
                "held_out_speakers": {
                    "fusion": "gated",
                    "augment": True,
                    "speakers": old,
                },  # the first run: no audio_features
                "held_out_speakers/gated+mfcc-shape-v1": {
                    "fusion": "gated",
                    "augment": True,
                    "audio_features": "mfcc-shape-v1",
                    "noise_snr_db": 0.0,
                    "speakers": new,
                },
                "held_out_speakers_no_augment": {"fusion": "gated", "augment": False, "speakers": old},
                "held_out_speakers_hybrid": {"fusion": "hybrid", "augment": True, "speakers": {"a": old["a"]}},
            }
        )
    )
    streams = held_out_streams(bench)
    assert [(r["fusion"], r["audio_features"], r["noise"] is None) for r in streams] == [
        ("gated", None, True),
        ("gated", "mfcc-shape-v1", False),
        ("hybrid", None, True),
    ]
    assert streams[1]["clean"]["fused"] == pytest.approx(0.95) and streams[1]["noise"]["fused"] == pytest.approx(0.85)
    assert streams[0]["worst_gain"] == pytest.approx(-0.1) and streams[1]["worst_gain"] == pytest.approx(0.04)
    cell = {"clean": [0.9, 0.01]}
    summary = {
        m: {"accuracy": cell, "macro_f1": [0.9, 0.0], "ece": [0.1, 0.0], "params": 1, "ms_per_sample": 0.1}
        for m in ("video", "gated")
    }
    result = {
        "summary": summary,
        "conditions": ["clean"],
        "methods": ["video", "gated", "hybrid"],
        "data": {"speakers": ["a", "b"]},
    }
    summary["hybrid"] = summary["gated"]
    lines = table(result, streams).splitlines()
    assert lines[0].endswith(
        "| held-out speaker stream | held-out speaker stream + mfcc-shape-v1 "
        "| held-out speaker stream + mfcc-shape-v1, noise 0 dB |"
    )
    assert lines[2].endswith("| - | - | - |") and lines[3].endswith("| 0.850 | 0.950 | 0.850 |")
    assert lines[4].endswith("| - | - | - |")  # hybrid ran on one of the two speakers only: no mean to show
    assert lines[5].startswith("| zero-shot, calibrated (default, no head) | zero-shot | n/a |")
    assert table({"summary": summary, "conditions": ["clean"], "methods": ["video"]}).count("\n") == 2
    full = streams_table(streams).splitlines()
    assert full[2].startswith("| gated | none (pooled YAMNet) | a, b | 0.850 | 0.200 | 0.900 | -0.050 | -0.100 | - |")
    assert full[3] == (
        "| gated | mfcc-shape-v1 | a, b | 0.950 | 0.600 | 0.900 | +0.050 | +0.040 | 0.850 | 0.300 | 0.900 | -0.050 |"
    )
    assert full[-1].startswith("| zero-shot, calibrated (default, no head) | - | - | n/a |")


def test_stream_columns_name_the_training_recipe_and_a_partial_set_of_speakers() -> None:
    from streamclf.compare import stream_columns

    def run(speakers: list[str], noise_copies: bool) -> dict:
        runs = {"fused": 0.9, "audio only": 0.5, "video only": 0.8}
        return {
            "fusion": "gated",
            "audio_features": "mfcc-shape-v1",
            "training_noise": "generated" if noise_copies else None,
            "noise_snr_db": 0.0,
            "speakers": speakers,
            "clean": runs,
            "noise": runs,
        }

    columns = stream_columns([run(["a", "b", "c"], False), run(["a", "c"], True)], {"a", "b", "c"})
    assert list(columns) == [
        "held-out speaker stream + mfcc-shape-v1",
        "held-out speaker stream + mfcc-shape-v1 + noise copies (a, c only)",
        "held-out speaker stream + mfcc-shape-v1, noise 0 dB",
        "held-out speaker stream + mfcc-shape-v1 + noise copies (a, c only), noise 0 dB",
    ]


def test_fallback_answers_one_modality_as_the_unimodal_head_would() -> None:
    """A modality removed at run time: the fused head's answer is exactly the unimodal head's on the same rows."""
    x, present, y = _data(200, 3)
    present = {m: v.copy() for m, v in present.items()}
    present["video"][:30] = False  # some rows without video, as in training with dropout and silent copies
    classes = [f"c{i}" for i in range(C)]
    fused = build_head("gated", ("audio", "video"), classes, DIMS, seed=1, epochs=8, fallback=True)
    fused.fit(x, present, y)
    plain = build_head("gated", ("audio", "video"), classes, DIMS, seed=1, epochs=8).fit(x, present, y)
    test, test_present, _ = _data(60, 4)
    both = fused.predict_proba(test, test_present)
    assert np.allclose(both, plain.predict_proba(test, test_present), atol=1e-6)  # both there: unchanged
    for m in ("audio", "video"):
        alone = build_head(m, ("audio", "video"), classes, DIMS, seed=1, epochs=8).fit(x, present, y)
        shown = {k: (v if k == m else np.zeros_like(v)) for k, v in test_present.items()}
        assert np.allclose(fused.predict_proba(test, shown), alone.predict_proba(test, shown), atol=1e-6), m
        assert np.allclose(fused.explain(test, shown)[m], 1.0)
    assert fused.spec()["fallback"] and fused.n_params() > plain.n_params()
