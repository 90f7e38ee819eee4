"""The encoder zoo: offline Lite1/Lite2, torchvision hub models (offline message and the real loading
path on a weights file the test writes), clip models in the pipeline, the speech gate, `streamclf models`."""

from __future__ import annotations

import io
import json
import urllib.error

import numpy as np
import pytest
import torch

from streamclf.cli import main
from streamclf.config import AlertRule, ConfigError, SpeechGate, load_config
from streamclf.encoders import (
    MODELS,
    EfficientNet_Lite1_Weights,
    EfficientNet_Lite2_Weights,
    Encoder,
    SileroVAD_Weights,
    Torchvision_Weights,
    WeightsUnavailable,
    efficientnet_lite1,
    efficientnet_lite2,
    silero_vad,
    torchvision_model,
)
from streamclf.encoders.hub import TorchvisionTransform, hub_checkpoints, is_cached, uniform_indices
from streamclf.encoders.silero import silero_file
from streamclf.fusion.categories import BUILTIN, CategoryMap
from streamclf.sources import read_audio

from .conftest import shared


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache where nothing can be downloaded (even on a machine with internet)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def write_random_weights(arch: str) -> dict[str, torch.Tensor]:
    """A random-init torchvision state dict saved where torch hub looks for the real one."""
    from torchvision.models import get_model_builder

    weights = Torchvision_Weights[arch.upper()]
    torch.manual_seed(0)
    state = get_model_builder(arch)(weights=None).state_dict()
    hub_checkpoints().mkdir(parents=True, exist_ok=True)
    torch.save(state, hub_checkpoints() / weights.meta["hub"]["file"])
    return state


def real_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.array(im) for im in load_sample_images().images]  # china.jpg (a palace), flower.jpg


@pytest.mark.parametrize(
    "builder,weights,crop",
    [
        (efficientnet_lite1, EfficientNet_Lite1_Weights.DEFAULT, 240),
        (efficientnet_lite2, EfficientNet_Lite2_Weights.DEFAULT, 260),
    ],
)
def test_lite1_lite2_read_their_size_and_label_a_real_photo(builder, weights, crop):
    x = weights.transforms()(torch.from_numpy(real_photos()[0][None]))
    assert x.shape == (1, 3, crop, crop) and f"crop {crop}" in weights.meta["input"]
    model = builder(weights=weights)
    with torch.inference_mode():
        emb, logits = model.embed(x)
    assert emb.shape == (1, 1280) and logits.shape == (1, 1000)
    assert weights.meta["categories"][int(logits.argmax())] == "palace"


def test_hub_weights_offline_give_one_clear_message(torch_home):
    weights = Torchvision_Weights.R2PLUS1D_18
    assert not is_cached(weights)
    with pytest.raises(WeightsUnavailable) as err:
        torchvision_model("r2plus1d_18", weights=weights)
    message = str(err.value)
    assert "r2plus1d_18" in message and "r2plus1d_18-91a641e6.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message and weights.meta["hub"]["url"] in message


def test_hub_error_is_one_line_from_the_cli(torch_home, capsys):
    clip = shared("media/flipping_a_pancake.mkv")
    assert main(["run", str(clip), "--no-dashboard", "--video-encoder", "mvit_v2_s"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("streamclf: error: mvit_v2_s: weights file mvit_v2_s-ae3be167.pth")


@pytest.mark.parametrize("arch", [w.meta["arch"] for w in Torchvision_Weights])
def test_hub_model_loads_a_cached_weights_file(torch_home, arch):
    """The loading path torch hub takes for a user who is online, on a file this test writes (1-7 s each)."""
    state = write_random_weights(arch)
    weights = Torchvision_Weights[arch.upper()]
    assert is_cached(weights)
    enc = Encoder(arch, torch.device("cpu"))  # the real path: torch hub reads the cached file
    loaded = enc.model.backbone.state_dict()
    same = [k for k in loaded if k in state]
    assert len(same) >= len(state) - 2 and all(torch.equal(loaded[k], state[k]) for k in same)
    meta, clip = enc.meta, enc.meta.get("clip")
    frames = np.random.default_rng(0).integers(0, 256, (20 if clip else 2, 128, 227, 3), dtype=np.uint8)
    x = enc.transform(torch.from_numpy(frames))
    crop = weights.transforms().inner.crop_size[0]
    assert x.shape == ((1, 3, clip["frames"], crop, crop) if clip else (2, 3, crop, crop))
    ((emb, scores),) = enc.embed([frames])
    n = 1 if clip else 2
    assert emb.shape == (n, meta["embedding_dim"]) and scores.shape == (n, len(meta["categories"]))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
    assert len(meta["categories"]) == {"imagenet-1k": 1000, "kinetics-400": 400}[meta["label_space"]]


def test_clip_transform_samples_frames_uniformly():
    assert uniform_indices(32, 4).tolist() == [0, 10, 21, 31]
    assert uniform_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # fewer frames than the clip: repeated
    frames = np.stack([np.full((112, 112, 3), i, np.uint8) for i in range(30)])
    clip = TorchvisionTransform("R2Plus1D_18_Weights.KINETICS400_V1", frames=16)(torch.from_numpy(frames))
    assert clip.shape == (1, 3, 16, 112, 112)
    mean, std = 0.43216, 0.22803  # red channel
    picked = (clip[0, 0, :, 0, 0] * std + mean) * 255
    np.testing.assert_allclose(picked.numpy(), uniform_indices(30, 16), atol=0.01)


def test_kinetics_categories_and_inactive_spaces():
    kinetics = Torchvision_Weights.R2PLUS1D_18.meta["categories"]
    cats = CategoryMap.load(
        BUILTIN, {"kinetics-400": kinetics}, known={"imagenet-1k", "audioset", "kinetics-400", "detector"}
    )
    assert kinetics.index("flipping pancake") in cats.members["kinetics-400"]["cooking"]
    assert "imagenet-1k" not in cats.members  # the ImageNet members wait for an ImageNet encoder
    with pytest.raises(ValueError, match="unknown label space 'audioset'"):  # a typo in a space still fails
        CategoryMap.load(BUILTIN, {"kinetics-400": kinetics})


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_silero_port_matches_the_packaged_torchscript_model():
    wav = read_audio(shared("fsdd/3_george_5.wav"))
    scripted = torch.jit.load(str(silero_file()), map_location="cpu")
    padded = np.pad(wav, (0, -len(wav) % 512))
    with torch.inference_mode():
        reference = [float(scripted(torch.from_numpy(padded[i : i + 512]), 16000)) for i in range(0, len(padded), 512)]
        probs, hidden = silero_vad().chunk_probs(SileroVAD_Weights.DEFAULT.transforms()(wav))
    assert probs.shape == (1, len(reference)) and hidden.shape == (1, len(reference), 128)
    np.testing.assert_allclose(probs[0].numpy(), reference, atol=1e-5)


def test_speech_gate_hears_a_spoken_digit_and_not_a_dog():
    enc = Encoder("silero_vad", torch.device("cpu"))
    speech = read_audio(shared("fsdd/7_jackson_3.wav"))
    sounds = [read_audio(shared(f"sounds/scratch/{p}")) for p in ("Animal/Dog1.wav", "Effects/CarPassing.wav")]
    (emb, p_speech), *others = enc.embed([speech, *sounds])
    assert emb.shape == (1, 128) and p_speech.shape == (1, 1)
    assert p_speech[0, 0] > 0.8 and all(p[0, 0] < 0.3 for _, p in others)


def test_speech_gate_in_alert_rules():
    gate = SpeechGate(max=0.5)
    assert gate.admits(0.2) and gate.admits(None) and not gate.admits(0.9)
    assert SpeechGate(min=0.5).admits(0.9) and not SpeechGate(min=0.5).admits(None)
    AlertRule(label="shouting", speech={"max": 0.5})
    with pytest.raises(ConfigError, match="speech"):
        load_config(**{"alerts.rules": [{"label": "shouting", "speech": {"maximum": 0.5}}]})


def test_models_lists_everything_offline(torch_home, capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(MODELS) <= set(rows) and {"avdigits", "avdigits-audio", "avdigits-video"} <= set(rows)
    for name, entry in MODELS.items():
        row = rows[name]
        assert row["label_space"] == entry.weights.meta["label_space"] and row["license"] and row["params"]
        if "hub" in entry.weights.meta:
            assert row["weights"] == "not cached (download on first use)" and not row["available"]
        else:
            assert row["weights"] == "offline" and row["available"]
    assert rows["avdigits"]["kind"] == "head" and rows["avdigits"]["license"].startswith("CC BY-SA 4.0")
    write_random_weights("mobilenet_v3_large")
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v3_large" in table and "cached" in table and "kinetics-400 (400)" in table


def test_models_table_fits_100_columns_and_wide_has_every_column(torch_home):
    from rich.console import Console

    from streamclf.zoo import list_models, render

    rows = list_models()
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(render(rows))
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 100
    names = {r.name for r in rows}
    body = [line for line in lines if line.split() and line.split()[0] in names]
    assert [line.split()[0] for line in body] == [r.name for r in rows]
    assert len([line for line in lines if line.strip()]) == len(rows) + 4  # title, header, rule, caption: no folds
    assert [c.header for c in render(rows).columns] == [
        "name",
        "modality",
        "labels",
        "params",
        "MB",
        "weights",
        "license",
    ]
    assert [c.header for c in render(rows, wide=True).columns] == [
        "name",
        "kind",
        "modality",
        "labels",
        "input",
        "params",
        "MB",
        "weights",
        "license",
    ]


def test_run_with_another_video_encoder_and_the_speech_gate(tmp_path):
    out = tmp_path / "out.jsonl"
    clip = shared("media/grid/bbaf2n.mpg")
    assert (
        main(
            [
                "run",
                str(clip),
                "--no-dashboard",
                "--out",
                str(out),
                "--video-encoder",
                "efficientnet_lite1",
                "--speech",
                "--hop",
                "1",
            ]
        )
        == 0
    )
    records = [r for r in map(json.loads, out.read_text().splitlines()) if "type" not in r]
    assert records and all(r["video"] and "speech" in r for r in records)
    assert max(r["speech"] for r in records) > 0.8  # GRID: a speaker reads a sentence


def test_run_with_a_clip_model_adapts_the_window(torch_home, tmp_path, capsys):
    write_random_weights("r2plus1d_18")
    out = tmp_path / "out.jsonl"
    clip = shared("media/grid/bbaf2n.mpg")
    assert (
        main(["run", str(clip), "--no-dashboard", "--out", str(out), "--video-encoder", "r2plus1d_18", "--hop", "1"])
        == 0
    )
    assert "window fps 4 -> 15, length 2 -> 1.067" in capsys.readouterr().err
    records = [r for r in map(json.loads, out.read_text().splitlines()) if "type" not in r]
    assert records and all(r["t_end"] - r["t_start"] == pytest.approx(1.067) for r in records)
    kinetics = set(Torchvision_Weights.R2PLUS1D_18.meta["categories"])
    assert all(r["video"] and {e["label"] for e in r["video"]} <= kinetics for r in records)


def test_a_head_on_clip_model_embeddings_runs(torch_home, tmp_path):
    """Heads see embeddings, not label spaces: one trained on a Kinetics clip model's 512-d features runs live."""
    from streamclf.fusion import build_head, save_head

    write_random_weights("r2plus1d_18")
    rng = np.random.default_rng(0)
    x, y = {"video": rng.normal(size=(40, 512)).astype(np.float32)}, np.arange(40) % 2
    head = build_head("video", ("video",), ["pancake", "other"], {"video": 512}, epochs=2)
    save_head(
        head.fit(x, {"video": np.ones(40, bool)}, y),
        tmp_path / "head",
        {"encoders": {"video": Torchvision_Weights.R2PLUS1D_18.id}},
    )
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "run",
                str(shared("media/grid/bbaf2n.mpg")),
                "--no-dashboard",
                "--out",
                str(out),
                "--video-encoder",
                "r2plus1d_18",
                "--head",
                str(tmp_path / "head"),
                "--hop",
                "1",
            ]
        )
        == 0
    )
    records = [r for r in map(json.loads, out.read_text().splitlines()) if "type" not in r]
    assert records and all({e["label"] for e in r["labels"]} == {"pancake", "other"} for r in records)
