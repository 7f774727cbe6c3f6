"""Shot detection on planted shots: hard cuts, gradual transitions, and negatives."""

from __future__ import annotations

import numpy as np
import pytest

from operators.segment import boundary_times, detect_shots, shot_ids_from_starts, shot_windows
from tests.planted import random_directions, shot_video, unit

FPS = 4.0


def _times(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / FPS


def _matches(found: np.ndarray, truth: np.ndarray, tol: int = 1) -> bool:
    """Same number of starts, each within ``tol`` frames of the planted one."""
    return len(found) == len(truth) and bool(np.all(np.abs(found - truth) <= tol))


def test_hard_cuts_found_exactly() -> None:
    feats, truth = shot_video(np.random.default_rng(0), [20, 12, 30, 9, 16], noise=0.05)
    found = detect_shots(feats, _times(len(feats)))
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, truth)


@pytest.mark.parametrize("blend", [3, 6])
def test_gradual_transitions_found(blend: int) -> None:
    feats, truth = shot_video(
        np.random.default_rng(1), [24, 20, 28, 22], noise=0.01, blend=blend
    )
    found = detect_shots(feats, _times(len(feats)))
    assert _matches(found, truth), (found, truth)


def test_static_shot_with_noise_has_no_boundary() -> None:
    rng = np.random.default_rng(2)
    feats = unit(random_directions(rng, 1, 64) + 0.1 * rng.normal(size=(200, 64)))
    np.testing.assert_array_equal(detect_shots(feats, _times(200)), [0])


def test_slow_drift_is_not_a_boundary() -> None:
    """A slow pan: the frame vector turns steadily from one direction to another."""
    rng = np.random.default_rng(3)
    a, b = random_directions(rng, 2, 64)
    w = np.linspace(0.0, 1.0, 240)[:, None]
    feats = unit((1 - w) * a + w * b + 0.03 * rng.normal(size=(240, 64)))
    np.testing.assert_array_equal(detect_shots(feats, _times(240)), [0])


def test_min_shot_length_suppresses_flash() -> None:
    """Two cuts 0.5 s apart (a flash) count once when min_shot_s is 1 s."""
    feats, _ = shot_video(np.random.default_rng(4), [20, 2, 20], noise=0.05)
    found = detect_shots(feats, _times(len(feats)), min_shot_s=1.0)
    assert len(found) == 2 and abs(found[1] - 20) <= 2


def test_explicit_threshold_controls_sensitivity() -> None:
    feats, _ = shot_video(np.random.default_rng(5), [20, 20, 20], noise=0.05)
    assert len(detect_shots(feats, _times(60), threshold=0.05)) == 3
    assert len(detect_shots(feats, _times(60), threshold=1.9, gradual_threshold=1.9)) == 1


def test_tiny_inputs() -> None:
    assert detect_shots(np.zeros((0, 8), np.float32), np.zeros(0)).shape == (0,)
    np.testing.assert_array_equal(detect_shots(unit(np.ones((1, 8))), np.zeros(1)), [0])
    np.testing.assert_array_equal(detect_shots(unit(np.eye(8)[:2]), _times(2)), [0])


def test_shot_ids_and_boundary_times() -> None:
    starts = np.array([0, 3, 7])
    np.testing.assert_array_equal(
        shot_ids_from_starts(9, starts), [0, 0, 0, 1, 1, 1, 1, 2, 2]
    )
    assert shot_ids_from_starts(0, starts).shape == (0,)
    np.testing.assert_allclose(boundary_times(_times(9), starts), [0.625, 1.625])
    assert boundary_times(_times(3), np.array([0])).shape == (0,)


def test_shot_windows_tile_the_video() -> None:
    ts = np.arange(10, dtype=np.float64)
    start_s, end_s = shot_windows(ts, np.array([0, 4, 7]), 10.0)
    np.testing.assert_allclose(start_s, [0.0, 3.5, 6.5])
    np.testing.assert_allclose(end_s, [3.5, 6.5, 10.0])
    assert shot_windows(np.zeros(0), np.zeros(0, np.int64), 0.0)[0].shape == (0,)
