"""The cascade: which frames the model must see."""

from __future__ import annotations

import numpy as np

from operators.cascade import redundancy_groups
from operators.select import coverage
from tests.planted import unit


def _shots(lengths: list[int], dim: int = 32, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=dim) + noise * rng.normal(size=(n, dim)) for n in lengths]
    return unit(np.concatenate(parts).astype(np.float32))


def test_static_shots_need_one_frame_each():
    feats = _shots([20, 30, 14], noise=0.001)
    reps, group_of = redundancy_groups(feats, max_ratio=0.25)
    assert len(reps) == 3
    assert np.array_equal(np.unique(group_of[:20]), [0])
    assert group_of[20] == 1 and group_of[50] == 2


def test_budget_is_never_exceeded_even_when_every_frame_differs():
    feats = unit(np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32))
    reps, group_of = redundancy_groups(feats, max_ratio=0.25)
    assert len(reps) <= 16
    assert np.array_equal(np.sort(reps), reps) and len(np.unique(reps)) == len(reps)
    assert np.all(group_of[reps] == np.arange(len(reps)))  # each representative in its group
    assert np.all(np.diff(group_of) >= 0)  # groups are temporal runs


def test_min_groups_raises_the_cap_but_keeps_duplicates_together():
    varied = unit(np.random.default_rng(2).normal(size=(64, 16)).astype(np.float32))
    assert len(redundancy_groups(varied, max_ratio=0.1)[0]) <= 7
    reps, _ = redundancy_groups(varied, max_ratio=0.1, min_groups=16)
    assert 7 < len(reps) <= 16
    # near-duplicates stay one group each: the floor is a cap, not a quota
    static = _shots([32, 32], noise=0.001)
    assert len(redundancy_groups(static, max_ratio=0.1, min_groups=16)[0]) == 2
    # never more groups than frames
    assert len(redundancy_groups(varied[:5], max_ratio=0.1, min_groups=16)[0]) <= 5


def test_slow_drift_starts_new_groups():
    # a slow pan: every neighbour is similar, but the end is far from the start
    t = np.linspace(0, np.pi / 2, 60)[:, None]
    a, b = np.eye(8)[0], np.eye(8)[1]
    feats = unit((np.cos(t) * a + np.sin(t) * b).astype(np.float32))
    reps, _ = redundancy_groups(feats, max_ratio=0.25)
    assert len(reps) >= 4
    assert coverage(feats, reps) > 0.97


def test_propagated_embeddings_keep_coverage():
    feats = _shots([16, 16, 16, 16], noise=0.05, seed=3)
    reps, group_of = redundancy_groups(feats, max_ratio=0.25)
    propagated = feats[reps][group_of]
    assert float(np.mean(np.sum(propagated * feats, axis=1))) > 0.95


def test_empty_and_single_frame():
    reps, group_of = redundancy_groups(np.zeros((0, 4), np.float32))
    assert len(reps) == 0 and len(group_of) == 0
    reps, group_of = redundancy_groups(unit(np.ones((1, 4), np.float32)))
    assert list(reps) == [0] and list(group_of) == [0]
