"""Decoding (decord) and training-free features, on synthetic and real videos."""

from __future__ import annotations

import numpy as np
import pytest

from operators.decode import (
    DecodeError,
    decode_video,
    iter_chunks,
    probe_video,
    read_frames,
    sample_indices,
)
from operators.features import FEATURE_DIM, frame_features
from tests.synthetic import make_shots_video, shot_frames


@pytest.fixture(scope="module")
def shots_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "three_shots.mp4"
    bounds = make_shots_video(path, [3.0, 2.0, 4.0], fps=10)
    return path, bounds


def test_probe_reports_length_rate_and_size(shots_video):
    info = probe_video(str(shots_video[0]))
    assert info.num_frames == 90
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(9.0)
    assert (info.width, info.height) == (160, 120)


def test_sampling_takes_one_frame_per_interval(shots_video):
    info = probe_video(str(shots_video[0]))
    idx = sample_indices(info, fps=2.0)
    assert np.array_equal(idx, np.arange(0, 90, 5))
    assert len(sample_indices(info, fps=100.0)) == 90  # never more than the source has
    assert len(sample_indices(info, fps=2.0, max_frames=6)) <= 6


def test_chunks_are_bounded_and_cover_every_sampled_frame(shots_video):
    chunks = list(iter_chunks(str(shots_video[0]), fps=4.0, size=64, chunk_frames=7))
    assert all(len(c.frame_index) <= 7 for c in chunks)
    assert all(c.frames.shape[1:] == (64, 64, 3) and c.frames.dtype == np.uint8 for c in chunks)
    ts = np.concatenate([c.timestamps for c in chunks])
    assert len(ts) == 36 and np.all(np.diff(ts) > 0)


def test_decoded_frames_match_the_written_content(shots_video):
    d = decode_video(str(shots_video[0]), fps=1.0, size=64)
    # frame 0 and frame 50 come from different shots: their mean colours differ a lot
    expected = [shot_frames(30, 0)[0].mean(axis=(0, 1)), shot_frames(40, 2)[0].mean(axis=(0, 1))]
    assert np.abs(d.frames[0].mean(axis=(0, 1)) - expected[0]).max() < 25
    assert np.abs(d.frames[5].mean(axis=(0, 1)) - expected[1]).max() < 25


def test_read_frames_full_resolution_and_scaled(shots_video):
    full = read_frames(str(shots_video[0]), np.array([40, 3]))
    assert full.shape == (2, 120, 160, 3)
    small = read_frames(str(shots_video[0]), np.array([3]), max_side=80)
    assert max(small.shape[1:3]) == 80


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"this is not a video at all\n" * 100, "not a video: the file holds text")],
)
def test_unreadable_files_raise_a_readable_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        probe_video(str(path))


def test_missing_file_raises(tmp_path):
    with pytest.raises(DecodeError, match="not found"):
        probe_video(str(tmp_path / "nope.mp4"))


def test_features_are_normalised_deterministic_and_separate_shots():
    a, b = shot_frames(5, 1), shot_frames(5, 2)
    fa, fb = frame_features(a), frame_features(b)
    assert fa.shape == (5, FEATURE_DIM) and fa.dtype == np.float32
    assert np.allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(fa, frame_features(a))
    within = float((fa[0] * fa[1]).sum())
    across = float((fa[0] * fb[0]).sum())
    assert within > 0.95 and across < within - 0.2


def test_features_of_no_frames_and_bad_shape():
    assert frame_features(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, FEATURE_DIM)
    with pytest.raises(ValueError, match="RGB"):
        frame_features(np.zeros((2, 32, 32), np.uint8))


def test_real_video_decodes_at_model_size(shared_videos):
    d = decode_video(str(shared_videos / "Megamind.avi"), fps=1.0)
    assert d.frames.shape == (12, 224, 224, 3)
    assert d.info.width == 720 and d.info.height == 528


@pytest.mark.parametrize("name", ["Megamind.avi", "cityCC0.mpg", "big_buck_bunny_0_30.webm"])
def test_sampled_frames_are_the_frames_asked_for(shared_videos, name):
    """decord seeks ~100 frames early in Megamind.avi and reads cityCC0.mpg 12 frames off;
    the frames we return must be the true ones (checked against a plain in-order decode)."""
    import av

    path = str(shared_videos / name)
    want = [10, 100, 150]
    truth = {}
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in want:
                truth[i] = frame.to_ndarray(format="rgb24").astype(int)
            if i >= max(want):
                break
    got = read_frames(path, np.array(want))
    for j, i in enumerate(want):
        assert np.abs(got[j].astype(int) - truth[i]).mean() < 2.0, (name, i)


def test_dense_sampling_decodes_in_order_and_sparse_sampling_seeks(shared_videos):
    """Sampling one frame per GOP or more often decodes every frame anyway, so it runs in
    order with PyAV (cheaper: only kept frames are scaled); sparser sampling seeks with
    decord. Both return the same frames."""
    from operators.decode import _RandomAccessReader, _SequentialReader, model_geometry, open_reader

    path = str(shared_videos / "big_buck_bunny_0_30.webm")  # 24 fps, keyframes ~93 frames apart
    info = probe_video(path)
    w, h = model_geometry(info, 224)
    assert isinstance(open_reader(path, w, h, 1, step=24), _SequentialReader)
    assert isinstance(open_reader(path, w, h, 1, step=240), _RandomAccessReader)
    dense = decode_video(path, fps=1.0)  # every 24th frame: in order
    sparse = decode_video(path, fps=0.1)  # every 240th: seeks
    common = np.intersect1d(dense.frame_index, sparse.frame_index)
    assert len(common) == 3
    a = dense.frames[np.searchsorted(dense.frame_index, common)].astype(int)
    b = sparse.frames[np.searchsorted(sparse.frame_index, common)].astype(int)
    assert np.abs(a - b).mean() < 3.0  # the same frames (two resamplers)
    assert np.abs(a - np.roll(b, 1, axis=0)).mean() > 10.0  # where other frames differ a lot


@pytest.mark.parametrize(("name", "max_side"), [("big_buck_bunny_0_30.webm", None), ("cityCC0.mpg", 320)])
def test_in_order_decoding_also_encodes_each_frame_as_read_frames_would(shared_videos, name, max_side):
    """With encode_images every sampled frame comes with its image at output size (the
    source's, or fitted to max_side), made from the same decoded picture: what finalize
    would otherwise get by reading the frame again."""
    import io

    from PIL import Image

    from operators.write import encode_image

    path = str(shared_videos / name)
    info = probe_video(path)
    chunks = list(iter_chunks(path, 1.0, 224, 8, info=info, encode_images=encode_image, image_max_side=max_side))
    assert all(c.images is not None and len(c.images) == len(c.frames) for c in chunks)
    index = np.concatenate([c.frame_index for c in chunks])
    images = [img for c in chunks for img in c.images]
    again = read_frames(path, index, max_side, info=info)
    for img, px in zip(images, again, strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(img)).convert("RGB")).astype(int)
        assert decoded.shape == px.shape  # (H, W, 3) at output size
        assert np.abs(decoded - px.astype(int)).mean() < 6.0  # the same frame (JPEG q90)
    assert max_side is None or max(again.shape[1:3]) <= max_side
    # frames no further apart than a GOP would be the same frames one step off: tell them apart
    first = np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB")).astype(int)
    assert np.abs(first - again[len(again) // 2].astype(int)).mean() > 10.0


def test_seeking_decoding_encodes_no_images(shared_videos):
    path = str(shared_videos / "big_buck_bunny_0_30.webm")  # keyframes ~93 frames apart
    from operators.write import encode_image

    chunks = list(iter_chunks(path, 0.1, 224, 8, encode_images=encode_image))
    assert chunks and all(c.images is None for c in chunks)


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("libx264", ".mkv"), ("libx265", ".mp4")])
def test_in_order_decoding_skips_unneeded_b_frames_and_returns_the_same_frames(tmp_path, codec, suffix):
    """H.264 and HEVC with B-frames (the encoders' defaults): frames that are neither sampled
    nor referenced are not decoded at all, and every sampled frame is bit for bit what a full
    decode of the file gives, at the same index."""
    from operators.decode import _SequentialReader, center_crop, model_geometry, open_reader
    from tests.synthetic import write_video

    frames = np.concatenate([shot_frames(60, seed) for seed in range(3)])
    path = str(write_video(tmp_path / f"bframes{suffix}", frames, fps=10, codec=codec))
    info = probe_video(path)
    idx = sample_indices(info, fps=1.0)
    w, h = model_geometry(info, 64)

    full = open_reader(path, w, h, 1, step=10.0)  # no `wanted`: counts every decoded frame
    skipping = open_reader(path, w, h, 1, step=10.0, wanted=idx)
    assert isinstance(skipping, _SequentialReader) and skipping.skipping and not full.skipping
    parts = [idx[:7], idx[7:]]  # read in chunks, as iter_chunks does
    a = np.concatenate([full.read(p) for p in parts])
    b = np.concatenate([skipping.read(p) for p in parts])
    assert full.decoded >= idx[-1] + 1  # decoded everything up to the last sampled frame
    assert skipping.decoded < 0.8 * full.decoded  # skipped unreferenced B-frames
    assert a.shape == (len(idx), h, w, 3) and np.array_equal(a, b)
    # the same frames as decord's random access gives at those indices
    dec = decode_video(path, fps=0.1, size=64)  # sparse: seeks with decord
    common = np.searchsorted(idx, dec.frame_index)
    assert len(common) >= 2 and np.array_equal(idx[common], dec.frame_index)
    assert np.abs(center_crop(b[common], 64).astype(int) - dec.frames.astype(int)).mean() < 3.0


def test_skipping_is_off_where_packets_do_not_match_the_index(shared_videos):
    """Frames are indexed by their packets' timestamps only where those name exactly the
    frames decord's index lists; otherwise (or outside indexed containers) by counting."""
    from operators.decode import display_order, open_reader

    path = str(shared_videos / "cockatoo.mp4")
    n = probe_video(path).num_frames
    order = display_order(path, n)
    assert order is not None and len(order) == n and np.all(np.diff(order) > 0)
    assert display_order(path, n + 1) is None
    avi = str(shared_videos / "Megamind.avi")  # not an indexed container: counted
    assert not open_reader(avi, 64, 64, 1, step=24.0, wanted=np.arange(0, 200, 24)).skipping


def test_packed_mpeg4_b_frames_remuxed_to_matroska_are_counted_not_skipped(shared_videos, tmp_path):
    """Megamind.avi's MPEG-4 Part 2 packs each B-frame into the packet of the P-frame after
    it; copied into MKV, its packets have timestamps that its frames do not come out with.
    Such streams are decoded whole and counted, which gives the AVI's own frames."""
    import av

    from operators.decode import _SequentialReader, model_geometry, open_reader

    src = shared_videos / "Megamind.avi"
    dst = tmp_path / "megamind.mkv"
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for packet in inp.demux(s_in):
            if packet.dts is None or not packet.size:
                continue
            packet.stream = s_out
            out.mux(packet)
    info = probe_video(str(dst))
    idx = sample_indices(info, fps=1.0)
    w, h = model_geometry(info, 64)
    reader = open_reader(str(dst), w, h, 1, step=24.0, wanted=idx)
    assert isinstance(reader, _SequentialReader) and not reader.skipping
    truth = _SequentialReader(str(src), w, h, 1).read(idx)
    assert np.array_equal(reader.read(idx), truth)


def test_frame_cursor_stands_in_the_next_frame_for_a_missing_one():
    from operators.decode import _FrameCursor

    cursor = _FrameCursor(iter([(0, "a"), (1, "b"), (3, "d"), (4, "e"), (6, "g")]))
    assert cursor.at(0) == "a"
    assert cursor.at(2) == "d"  # 2 never came out of the decoder
    assert cursor.at(3) == "d"  # and 3 is still there
    assert cursor.at(6) == "g"  # 4 and 5 passed over
    assert cursor.at(7) is None
