"""Selection methods on planted structure: clusters, shots, needles; edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from operators.segment import detect_scenes, shot_ids_from_starts, stitch_shots
from operators.select import (
    METHODS,
    QUERY_METHODS,
    Selection,
    VideoFrames,
    coverage,
    method_names,
    select_frames,
    shot_recall,
)
from tests.planted import random_directions, shot_video, unit


def clustered(
    rng: np.random.Generator, sizes: list[int], dim: int = 64, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Frames scattered around one random centre per cluster, in a shuffled time order.

    Returns (embeddings (n, dim) unit rows, labels (n,) planted cluster of each frame).
    """
    centres = random_directions(rng, len(sizes), dim)
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    rng.shuffle(labels)
    emb = unit(centres[labels] + noise * rng.normal(size=(len(labels), dim)))
    return emb, labels



def _times(n: int, fps: float = 4.0) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / fps


def _shot_frames(seed: int = 0, lengths: tuple[int, ...] = (30, 8, 50, 12, 20)) -> VideoFrames:
    emb, starts = shot_video(np.random.default_rng(seed), list(lengths), noise=0.1)
    ids = shot_ids_from_starts(len(emb), starts)
    return VideoFrames(emb, _times(len(emb)), shot_ids=ids, features=emb)


def _cluster_frames(seed: int = 0) -> tuple[VideoFrames, np.ndarray]:
    emb, labels = clustered(np.random.default_rng(seed), [40, 25, 10, 5, 20])
    return VideoFrames(emb, _times(len(emb)), features=emb), labels


def _assert_valid(sel: Selection, k: int, n: int) -> None:
    """The Selection contract: shapes, dtypes, sorted unique indices, at most k."""
    m = len(sel.indices)
    assert m <= k and m <= n
    assert sel.indices.dtype == np.int64 and sel.cluster_ids.dtype == np.int64
    assert sel.scores.dtype == np.float32
    assert sel.scores.shape == sel.cluster_ids.shape == (m,)
    assert np.all(np.diff(sel.indices) > 0)
    assert m == 0 or (sel.indices[0] >= 0 and sel.indices[-1] < n)


PHASE1 = ["uniform", "kmeans", "kcenter", "shots"]
ALL = sorted(METHODS)


@pytest.mark.parametrize("method", PHASE1)
@pytest.mark.parametrize("k", [1, 3, 5, 17])
def test_contract_and_budget(method: str, k: int) -> None:
    frames = _shot_frames()
    sel = select_frames(method, frames, k)
    _assert_valid(sel, k, frames.n)
    assert len(sel.indices) == k and sel.k == k


def test_uniform_centres_of_equal_segments() -> None:
    frames = VideoFrames(unit(np.ones((100, 4))), _times(100))
    sel = select_frames("uniform", frames, 4)
    np.testing.assert_array_equal(sel.indices, [12, 37, 62, 87])
    np.testing.assert_array_equal(sel.cluster_ids, [0, 1, 2, 3])


@pytest.mark.parametrize("method", ["kmeans", "kcenter"])
def test_each_planted_cluster_gets_a_representative(method: str) -> None:
    frames, labels = _cluster_frames()
    sel = select_frames(method, frames, 5)
    assert sorted(labels[sel.indices]) == [0, 1, 2, 3, 4]


def test_uniform_misses_small_clusters() -> None:
    """Guard that the cluster test above is not trivially true: uniform misses one."""
    frames, labels = _cluster_frames()
    hits = [np.unique(labels[select_frames("uniform", frames, 5).indices]).size]
    assert hits[0] < 5


def test_kmeans_cluster_ids_group_frames_of_one_planted_cluster() -> None:
    frames, labels = _cluster_frames(1)
    sel = select_frames("kmeans", frames, 5)
    assert np.unique(sel.cluster_ids).size == 5
    # the biggest cluster (label 0, 40 frames) gets the highest score (cluster share)
    assert labels[sel.indices[np.argmax(sel.scores)]] == 0


@pytest.mark.parametrize("k", [5, 6, 12, 40])
def test_shots_cover_every_shot_when_budget_allows(k: int) -> None:
    frames = _shot_frames()
    sel = select_frames("shots", frames, k)
    assert shot_recall(frames.shot_ids, sel.indices) == 1.0
    np.testing.assert_array_equal(sel.cluster_ids, frames.shot_ids[sel.indices])


def test_shots_budget_in_proportion_to_length() -> None:
    frames = _shot_frames()
    sel = select_frames("shots", frames, 12)
    per_shot = np.bincount(sel.cluster_ids, minlength=5)
    assert per_shot.argmax() == 2  # the 50-frame shot gets the most
    assert per_shot.min() >= 1


def test_shots_with_small_budget_keep_long_shots() -> None:
    frames = _shot_frames()
    sel = select_frames("shots", frames, 2)
    assert 2 in set(sel.cluster_ids.tolist())  # the longest shot is always kept
    assert len(set(sel.cluster_ids.tolist())) == 2


def test_shots_without_shot_ids_is_an_error() -> None:
    frames, _ = _cluster_frames()
    with pytest.raises(ValueError, match="shot_ids"):
        select_frames("shots", frames, 3)


@pytest.mark.parametrize("method", ALL)
def test_deterministic_with_seed(method: str) -> None:
    frames = _with_query(_shot_frames(3), 5)
    a = select_frames(method, frames, 7, seed=11)
    b = select_frames(method, frames, 7, seed=11)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("method", ALL)
def test_k_larger_than_n_returns_every_frame(method: str) -> None:
    frames = _with_query(_shot_frames(lengths=(4, 3)), 0)
    sel = select_frames(method, frames, 50)
    np.testing.assert_array_equal(sel.indices, np.arange(7))
    assert sel.k == 7


@pytest.mark.parametrize("method", ALL)
def test_one_frame(method: str) -> None:
    emb = unit(np.ones((1, 8)))
    frames = VideoFrames(
        emb, np.zeros(1), shot_ids=np.zeros(1, np.int64), features=emb, query=emb[0]
    )
    sel = select_frames(method, frames, 3)
    np.testing.assert_array_equal(sel.indices, [0])


@pytest.mark.parametrize("method", ALL)
def test_zero_frames(method: str) -> None:
    frames = VideoFrames(
        np.zeros((0, 8), np.float32), np.zeros(0), shot_ids=np.zeros(0, np.int64),
        features=np.zeros((0, 8), np.float32), query=unit(np.ones(8)),
    )
    sel = select_frames(method, frames, 3)
    _assert_valid(sel, 3, 0)
    assert len(sel.indices) == 0


def test_bad_method_and_bad_k() -> None:
    frames, _ = _cluster_frames()
    with pytest.raises(ValueError, match="unknown method"):
        select_frames("nope", frames, 3)
    for bad in (0, -2, "many", 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            select_frames("uniform", frames, bad)


def test_method_names_match_registry() -> None:
    assert method_names() == sorted(METHODS)
    assert set(PHASE1) <= set(method_names())


def test_coverage_and_shot_recall_helpers() -> None:
    emb = unit(np.eye(4)[[0, 0, 1, 2]])
    assert coverage(emb, np.array([0])) == pytest.approx(0.5)
    assert coverage(emb, np.array([0, 2, 3])) == pytest.approx(1.0)
    assert coverage(emb, np.array([], np.int64)) == 0.0
    ids = np.array([0, 0, 1, 2])
    assert shot_recall(ids, np.array([1, 2])) == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- phase 2


def _needle_video(seed: int, n: int = 240, needle: int = 8) -> tuple[VideoFrames, np.ndarray]:
    """Four shots with a short needle shot spliced in at a random place; query = a needle
    frame. Returns the frames and the needle's frame indices."""
    rng = np.random.default_rng(seed)
    emb, starts = shot_video(rng, [n // 4] * 4, noise=0.1)
    at = int(rng.integers(needle, n - 2 * needle))
    vec = random_directions(rng, 1, emb.shape[1])
    piece = unit(vec + 0.1 * rng.normal(size=(needle, emb.shape[1])))
    emb = np.concatenate([emb[:at], piece, emb[at:]])
    ids = shot_ids_from_starts(n, starts)
    ids = np.concatenate([ids[:at], np.full(needle, ids.max() + 1), ids[at:]])
    _, ids = np.unique(ids, return_inverse=True)
    query = unit(vec[0] + 0.1 * rng.normal(size=emb.shape[1]))
    frames = VideoFrames(emb, _times(len(emb)), shot_ids=ids.astype(np.int64), query=query)
    return frames, np.arange(at, at + needle)


def _with_query(frames: VideoFrames, frame: int) -> VideoFrames:
    return VideoFrames(
        frames.embeddings, frames.timestamps, frames.shot_ids, frames.features,
        frames.embeddings[frame],
    )


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("k", [1, 4, 9])
def test_every_method_honours_the_contract(method: str, k: int) -> None:
    frames, _ = _needle_video(0)
    sel = select_frames(method, frames, k)
    _assert_valid(sel, k, frames.n)
    assert sel.k == k and len(sel.indices) >= 1


@pytest.mark.parametrize("method", ["query", "aks", "its", "dpp", "mmr", "clips"])
def test_needle_is_found_with_a_query(method: str) -> None:
    for seed in range(5):
        frames, needle = _needle_video(seed)
        sel = select_frames(method, frames, 8)
        assert np.isin(sel.indices, needle).any(), (method, seed)


def test_uniform_misses_the_needle_often() -> None:
    """Guard for the needle test: the needle is short enough that uniform misses it."""
    hits = [
        np.isin(select_frames("uniform", f, 8).indices, nd).any()
        for f, nd in (_needle_video(s) for s in range(10))
    ]
    assert sum(hits) <= 5


@pytest.mark.parametrize("method", sorted(QUERY_METHODS))
def test_query_methods_need_a_query(method: str) -> None:
    frames = _shot_frames()
    with pytest.raises(ValueError, match="needs a query"):
        select_frames(method, frames, 4)
    empty = VideoFrames(np.zeros((0, 8), np.float32), np.zeros(0))
    with pytest.raises(ValueError, match="needs a query"):
        select_frames(method, empty, 4)


def test_query_nms_keeps_frames_apart() -> None:
    frames, needle = _needle_video(1)
    sel = select_frames("query", frames, 4, min_gap_s=3.0)
    assert np.isin(sel.indices, needle).sum() == 1  # the 2 s needle holds one frame
    assert np.all(np.diff(frames.timestamps[sel.indices]) >= 3.0)
    assert sel.scores.max() == pytest.approx(float(np.max(frames.embeddings @ frames.query)))


def test_aks_spreads_over_time_when_nothing_stands_out() -> None:
    rng = np.random.default_rng(4)
    emb = unit(rng.normal(size=(160, 32)))
    frames = VideoFrames(emb, _times(160), query=unit(rng.normal(size=32)))
    sel = select_frames("aks", frames, 8)
    assert len(sel.indices) == 8
    assert np.bincount(sel.indices // 20, minlength=8).max() == 1  # one per eighth


def test_its_puts_more_frames_where_relevance_is_dense() -> None:
    frames, needle = _needle_video(2)
    sel = select_frames("its", frames, 8)
    assert np.isin(sel.indices, needle).sum() >= 3
    assert not np.isin(sel.indices, needle).all()  # the rest of the video still sampled


def test_dpp_without_query_covers_clusters_and_is_a_prefix_chain() -> None:
    frames, labels = _cluster_frames(2)
    sel = select_frames("dpp", frames, 5)
    assert sorted(labels[sel.indices]) == [0, 1, 2, 3, 4]
    small = select_frames("dpp", frames, 3)
    assert set(small.indices) <= set(sel.indices)


def test_dpp_quality_pulls_towards_the_query() -> None:
    frames, needle = _needle_video(3)
    with_q = select_frames("dpp", frames, 3)
    assert np.isin(with_q.indices, needle).any()


def test_mmr_first_pick_is_most_relevant_and_then_diverse() -> None:
    frames, needle = _needle_video(5)
    sel = select_frames("mmr", frames, 5)
    rel = frames.embeddings @ frames.query
    assert int(np.argmax(rel)) in sel.indices
    assert np.unique(frames.shot_ids[sel.indices]).size >= 4  # then diversity across shots
    clustered_frames, labels = _cluster_frames(3)
    assert sorted(labels[select_frames("mmr", clustered_frames, 5).indices]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("k", [3, 7, 8, 20])
def test_clips_respect_budget_and_shot_boundaries(k: int) -> None:
    frames = _shot_frames(6)
    sel = select_frames("clips", frames, k, clip_s=2.0)
    assert sel.clips is not None and sel.clips.shape[1] == 2
    assert len(sel.indices) <= k
    covered = np.concatenate([np.arange(a, b + 1) for a, b in sel.clips])
    np.testing.assert_array_equal(np.sort(covered), sel.indices)  # indices = clip frames
    assert np.all(sel.clips[1:, 0] > sel.clips[:-1, 1])  # in time order, no overlap
    for a, b in sel.clips:
        assert frames.shot_ids[a] == frames.shot_ids[b]  # never crosses a shot boundary
        assert b - a + 1 <= 8  # 2 s at 4 fps


def test_clips_with_query_cover_the_needle() -> None:
    frames, needle = _needle_video(7)
    sel = select_frames("clips", frames, 8, clip_s=2.0)
    a, b = sel.clips[0] if len(sel.clips) == 1 else sel.clips[np.argmax(sel.scores[0])]
    assert np.isin(needle, np.arange(a, b + 1)).sum() >= 6


def _scene_video(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three scenes of three shots each: shot = scene vector + its own direction.

    Returns (embeddings, shot starts, true scene starts)."""
    rng = np.random.default_rng(seed)
    scenes = random_directions(rng, 3, 64)
    rows, shot_starts, scene_starts = [], [], []
    for sc in range(3):
        scene_starts.append(len(rows))
        for _ in range(3):
            shot_starts.append(len(rows))
            own = random_directions(rng, 1, 64)[0]
            for _ in range(int(rng.integers(8, 16))):
                rows.append(scenes[sc] + 0.6 * own + 0.05 * rng.normal(size=64))
    return unit(np.array(rows)), np.array(shot_starts), np.array(scene_starts)


def test_detect_scenes_groups_planted_scenes() -> None:
    for seed in range(3):
        emb, shots, scenes = _scene_video(seed)
        np.testing.assert_array_equal(detect_scenes(emb, shots), scenes)


def test_stitch_merges_lookalike_neighbours_only() -> None:
    emb, shots, _ = _scene_video(1)
    fake = np.sort(np.append(shots, shots[1] + 3))  # a false cut inside shot 1
    np.testing.assert_array_equal(stitch_shots(emb, fake, 0.9), shots)


def test_scenes_method_covers_every_scene() -> None:
    emb, shots, scenes = _scene_video(2)
    ids = shot_ids_from_starts(len(emb), shots)
    frames = VideoFrames(emb, _times(len(emb)), shot_ids=ids)
    sel = select_frames("scenes", frames, 3)
    scene_of = shot_ids_from_starts(len(emb), scenes)
    assert sorted(scene_of[sel.indices]) == [0, 1, 2]


def test_auto_k_finds_the_planted_cluster_count() -> None:
    emb, _ = clustered(np.random.default_rng(8), [20] * 5)
    frames = VideoFrames(emb, _times(len(emb)))
    sel = select_frames("kcenter", frames, "auto", coverage_target=0.8)
    assert sel.k == 5 and len(sel.indices) == 5
    assert coverage(emb, sel.indices) >= 0.8
    assert coverage(emb, select_frames("kcenter", frames, 4).indices) < 0.8
    capped = select_frames("kcenter", frames, "auto", coverage_target=0.8, k_max=3)
    assert capped.k == 3


def test_dedup_drops_near_duplicates_only() -> None:
    rng = np.random.default_rng(9)
    base = random_directions(rng, 6, 32)
    emb = unit(np.repeat(base, 2, axis=0) + 1e-3 * rng.normal(size=(12, 32)))
    frames = VideoFrames(emb, _times(12), features=emb)
    plain = select_frames("uniform", frames, 12)
    deduped = select_frames("uniform", frames, 12, dedup_threshold=0.99)
    assert len(plain.indices) == 12
    np.testing.assert_array_equal(deduped.indices, np.arange(0, 12, 2))
    assert deduped.k == 12 and len(deduped.scores) == len(deduped.cluster_ids) == 6


@pytest.fixture(scope="module")
def clip_video() -> tuple[np.ndarray, np.ndarray]:
    """Four random frames and a text query through the random-weight CLIP towers.

    ViT-S-32 (the smallest ViT config open_clip ships) keeps this fast; the path is the
    same as for the default ViT-B-32."""
    from operators.embed import ClipEmbedder
    from operators.weights import EmbedderSpec

    model = ClipEmbedder(EmbedderSpec("clip", model="ViT-S-32"), device="cpu", batch_size=4)
    size = model.image_size
    images = np.random.default_rng(10).integers(0, 255, (4, size, size, 3), dtype=np.uint8)
    return model.encode_frames(images), model.encode_text(["a dog catching a frisbee"])[0]


@pytest.mark.parametrize("method", ["query", "aks", "its", "clips", "dpp", "mmr"])
def test_text_query_through_random_weight_clip(clip_video, method: str) -> None:
    """Plumbing, not semantics: random CLIP weights (no pretrained ones exist here)."""
    emb, query = clip_video
    assert query.shape == (emb.shape[1],)
    frames = VideoFrames(emb, _times(len(emb)), query=query)
    sel = select_frames(method, frames, 2)
    _assert_valid(sel, 2, len(emb))
    assert len(sel.indices) >= 1
    if method in {"query", "aks"}:  # both keep the most relevant frame
        assert int(np.argmax(emb @ query)) in sel.indices
