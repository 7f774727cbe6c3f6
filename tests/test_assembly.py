"""The run's assemblers (jobs/assembly.py): videos partitioned by id, rows handed to their
owner, outputs equal whatever the number of actors and with one assembler in the driver."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from jobs import curate
from jobs.assembly import MAX_ASSEMBLERS, assembler_count, owner
from tests.conftest import ROOT
from tests.synthetic import make_shots_video
from tests.test_cluster import assert_same_outputs, snapshot


def test_owner_spreads_videos_and_is_the_same_in_every_process():
    ids = [f"{i:032x}" for i in range(4000)]
    counts = Counter(owner(v, 4) for v in ids)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 850, counts
    assert {owner(v, 1) for v in ids} == {0}
    # a fresh interpreter (another hash seed) sends each video to the same actor
    code = "from jobs.assembly import owner; print([owner(f'{i:032x}', 7) for i in range(200)])"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert other.stdout.strip() == str([owner(f"{i:032x}", 7) for i in range(200)])


@pytest.mark.parametrize("requested,cpus,expected", [
    (0, 2, 1), (0, 127, 1), (0, 128, 2), (0, 1024, 16), (0, 10**6, MAX_ASSEMBLERS), (3, 2, 3),
])
def test_one_assembler_per_64_cluster_cpus_unless_asked(requested, cpus, expected):
    assert assembler_count(requested, cpus) == expected


def test_negative_assemblers_is_a_usage_error(tmp_path):
    assert curate.main([str(tmp_path), str(tmp_path / "o"), "--assemblers", "-1"]) == 2


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Eight 3 s clips of two shots: at --fps 4 --chunk-frames 2, six chunk rows each."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(8):
        make_shots_video(d / f"clip{i}.mp4", [1.5, 1.5], fps=10, seed=7 * i)
    return d


ARGS = ["--embedder", "features", "--fps", "4", "--chunk-frames", "2", "--k", "3", "--method", "kmeans"]


def _run(clips: Path, out: Path, assemblers: int) -> dict:
    assert curate.main([str(clips), str(out), *ARGS, "--assemblers", str(assemblers)]) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.integration
def test_videos_gathered_across_three_assemblers_equal_one(clips, tmp_path, ray_local):
    one = _run(clips, tmp_path / "one", 1)
    three = _run(clips, tmp_path / "three", 3)
    for rep in (one, three):
        assert rep["videos"] == {"done": 8, "failed": 0, "skipped": 0}
        assert rep["uncommitted"] == 0 and rep["assembler"]["never_completed"] == 0
        assert rep["assembler"]["duplicate_rows"] == 0
    # one assembler runs in the driver's process, three in actors
    assert one["assembler"]["assemblers"] == 1 and one["assembler"]["actors"] == 0
    assert one["assembler"]["forwarded_rows"] == 0
    # rows reached an actor that did not own their video, and were handed on
    assert three["assembler"]["actors"] == 3 and three["assembler"]["forwarded_rows"] > 0
    assert_same_outputs(tmp_path / "three", snapshot(tmp_path / "one"))
    assert three["frames_sampled"] == one["frames_sampled"]
