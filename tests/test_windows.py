"""Timestamps: windows tile the clip, and what a window holds is what its PTS range says."""

from __future__ import annotations

import queue

import av
import numpy as np
import pytest

from streamclf.sources import Decoder, SourceSpec
from streamclf.types import SAMPLE_RATE, AudioChunk, Frame, SourceEnd, SourceError, SourceInfo
from streamclf.windows import Windower, WindowSpec

from .conftest import shared


def decode_windows(path: str, spec: WindowSpec, fps: float = 4.0) -> tuple[SourceInfo, list]:
    q: queue.Queue = queue.Queue(maxsize=16)
    src = SourceSpec.parse(path)
    Decoder(src, q, fps=fps).start()
    w = Windower(src.name, spec)
    info, windows = None, []
    while True:
        item = q.get(timeout=60)
        if isinstance(item, SourceInfo):
            info = item
        assert not isinstance(item, SourceError), item.message
        windows += w.push(item)
        if isinstance(item, SourceEnd):
            return info, windows


def full_audio(path: str) -> tuple[float, np.ndarray]:
    """The whole audio track in one go, to check each window's slice against."""
    with av.open(path) as c:
        r = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [o for f in c.decode(audio=0) for o in r.resample(f)] + r.resample(None)
    return chunks[0].pts / SAMPLE_RATE, np.concatenate([o.to_ndarray().reshape(-1) for o in chunks])


@pytest.fixture(scope="module")
def bbb():
    path = str(shared("media/bbb_360p_60s.mp4"))
    spec = WindowSpec(length=2.0, hop=0.5)
    info, windows = decode_windows(path, spec)
    return path, spec, info, windows


def test_windows_tile_the_clip(bbb):
    _, spec, info, windows = bbb
    starts = np.array([w.t_start for w in windows])
    assert starts[0] == pytest.approx(info.start)
    assert np.allclose(np.diff(starts), spec.hop)
    assert all(w.t_end - w.t_start == pytest.approx(spec.length) for w in windows)
    assert windows[-1].t_end >= info.duration  # the last window reaches the end
    assert windows[-2].t_end < info.duration  # ... and only the last
    assert [w.index for w in windows] == list(range(len(windows)))


def test_frames_inside_their_window_at_the_sampling_rate(bbb):
    _, _, info, windows = bbb
    for w in windows:
        assert w.frames, f"window {w.index} has no frames"
        assert all(w.t_start <= f.pts < w.t_end for f in w.frames)
        if w.t_end <= info.duration:
            assert len(w.frames) == 8  # 2 s at 4 fps, chosen by PTS
            assert np.allclose(np.diff([f.pts for f in w.frames]), 0.25, atol=1 / 24)
        assert w.frames[0].image.dtype == np.uint8 and w.frames[0].image.shape[2] == 3


def test_audio_is_the_pts_slice_of_the_track(bbb):
    path, spec, info, windows = bbb
    t0, track = full_audio(path)
    one_aac_frame = round(1024 / 44100 * SAMPLE_RATE)  # tolerance: one audio frame
    full = [w for w in windows if w.t_end <= info.duration]
    assert len(full) >= 110
    for w in full:
        assert w.audio is not None and w.audio.dtype == np.float32
        expected = (w.t_end - w.t_start) * SAMPLE_RATE
        assert abs(len(w.audio) - expected) <= one_aac_frame
        i0 = round((w.t_start - t0) * SAMPLE_RATE)
        np.testing.assert_array_equal(w.audio, track[i0 : i0 + len(w.audio)])


def _chunk(t: float, seconds: float) -> AudioChunk:
    return AudioChunk("s", t, np.ones(int(seconds * SAMPLE_RATE), dtype=np.float32))


def test_missing_modality_is_absent_not_padded():
    w = Windower("s", WindowSpec(length=2.0, hop=1.0))
    w.push(SourceInfo("s", 0.0, 6.0, has_audio=True, has_video=True))
    out = []
    for t in np.arange(0, 6, 0.25):
        out += w.push(Frame("s", float(t), np.zeros((4, 4, 3), np.uint8)))
    # audio only for the first 2 s, then the track stops (a gap, not an end)
    out += w.push(_chunk(0.0, 2.0))
    out += w.push(SourceEnd("s"))
    assert [x.t_start for x in out] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert out[0].present == {"audio": True, "video": True}
    assert out[1].present == {"audio": True, "video": True}  # 1 s of audio is enough
    assert all(x.audio is None and x.present["video"] for x in out[2:])


def test_window_waits_for_every_live_track():
    w = Windower("s", WindowSpec(length=1.0, hop=1.0))
    w.push(SourceInfo("s", 0.0, None, has_audio=True, has_video=True))
    assert w.push(_chunk(0.0, 3.0)) == []  # video has not reached t_end yet
    got = w.push(Frame("s", 1.5, np.zeros((4, 4, 3), np.uint8)))
    assert [x.t_start for x in got] == [0.0]
    assert got[0].frames == [] and got[0].audio is not None
