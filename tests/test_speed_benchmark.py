"""The speed benchmark's CPU accounting: which process's CPU counts as which part of a job."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.common import process_role


def test_process_role_names_ray_workers_by_the_stage_they_run():
    assert process_role("ray::MapWorker(MapBatches(EmbedStage)).__init__", False) == "embedding actor"
    assert process_role("ray::MapBatches(DecodeStage)", False) == "decode + finalize tasks"
    assert process_role("ray::finalize_video()", False) == "decode + finalize tasks"
    assert process_role("/venv/bin/python -m anything", True) == "driver"
    assert process_role("/venv/lib/ray/core/src/ray/raylet/raylet --node", False) == "Ray"
    assert process_role("ray::_StatsActor", False) == "Ray"
    assert process_role("ray::IDLE", False) == ""  # counted as what it ran last


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_meter_gives_a_finished_tasks_cpu_to_its_stage_not_to_the_idle_worker():
    # A child titled like a Ray worker decoding is seen once at rest (first sample, 1 s),
    # then burns ~0.6 CPU-s and turns into an idle worker (exec keeps its pid and its CPU
    # count) before the next sample: that sample finds "ray::IDLE", and the CPU must still
    # count as decode, the task the worker finished. The meter runs in a fresh process, so
    # that its process tree holds only that child (not the Ray clusters of other tests).
    idle = "import time; time.sleep(0.8)"
    busy = textwrap.dedent(
        f"""
        import os, time
        time.sleep(1.2)
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
        os.execv({sys.executable!r}, ["ray::IDLE", "-c", {idle!r}])
        """
    )
    meter = textwrap.dedent(
        f"""
        import json, subprocess, sys
        from benchmarks.common import CpuMeter
        with CpuMeter(interval=1.0) as meter:
            subprocess.run(["bash", "-c", 'exec -a "ray::MapBatches(DecodeStage)" "$0" -c "$1"',
                            sys.executable, {busy!r}], check=True)
        print(json.dumps({{"roles": meter.by_role, "own": meter.own_s}}))
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", meter], cwd=root, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    roles = result["roles"]
    assert roles.get("decode + finalize tasks", 0.0) >= 0.55, roles
    assert roles.get("Ray", 0.0) < 0.1, roles
    assert sum(roles.values()) == pytest.approx(result["own"], abs=0.02)
