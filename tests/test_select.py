"""Selection methods on planted structure: clusters, shots, needles; edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from operators.segment import shot_ids_from_starts
from operators.select import (
    METHODS,
    Selection,
    VideoFrames,
    coverage,
    method_names,
    select_frames,
    shot_recall,
)
from tests.test_segment import random_directions, shot_video, unit


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


def test_uniform_misses_small_clusters_kcenter_does_not() -> None:
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


@pytest.mark.parametrize("method", PHASE1)
def test_deterministic_with_seed(method: str) -> None:
    frames = _shot_frames(3)
    a = select_frames(method, frames, 7, seed=11)
    b = select_frames(method, frames, 7, seed=11)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("method", PHASE1)
def test_k_larger_than_n_returns_every_frame(method: str) -> None:
    frames = _shot_frames(lengths=(4, 3))
    sel = select_frames(method, frames, 50)
    np.testing.assert_array_equal(sel.indices, np.arange(7))
    assert sel.k == 7


@pytest.mark.parametrize("method", PHASE1)
def test_one_frame(method: str) -> None:
    emb = unit(np.ones((1, 8)))
    frames = VideoFrames(emb, np.zeros(1), shot_ids=np.zeros(1, np.int64), features=emb)
    sel = select_frames(method, frames, 3)
    np.testing.assert_array_equal(sel.indices, [0])


@pytest.mark.parametrize("method", PHASE1)
def test_zero_frames(method: str) -> None:
    frames = VideoFrames(
        np.zeros((0, 8), np.float32), np.zeros(0), shot_ids=np.zeros(0, np.int64),
        features=np.zeros((0, 8), np.float32),
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
