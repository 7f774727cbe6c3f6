"""The job and the service share one per-video path: the same video with the same options
gets the same frames and shots from `POST /select` as from the job (CLIP, from one randomly
initialised checkpoint file that both load, so the cascade runs in both)."""

from __future__ import annotations

import socket

import httpx
import pytest

from jobs import curate
from operators.storage import Storage
from operators.write import read_table

pytestmark = pytest.mark.integration

OPTIONS = {"method": "kmeans", "k": 4, "fps": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_local, shared_videos, clip_checkpoint):
    from ray import serve

    from jobs.serve import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    one = {"autoscaling_config": None, "num_replicas": 1}
    serve.run(build_app({
        "allowed_prefixes": [str(shared_videos)], "embedder": "clip", "weights": clip_checkpoint,
        "embed_dtype": "fp32", "max_frames": 256,
        "ingress": {**one, "ray_actor_options": {"num_cpus": 0.25}},
        "embedding": {**one, "ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0}},
    }), name="framesift-one-path", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.mark.parametrize("name", ["Megamind.avi", "big_buck_bunny_0_30.webm"])
def test_job_and_service_select_the_same_frames(service, clip_checkpoint, shared_videos, tmp_path, name):
    video = shared_videos / name
    out = tmp_path / "out"
    argv = [str(video), str(out), "--embedder", "clip", "--weights", clip_checkpoint, "--embed-dtype", "fp32",
            "--method", OPTIONS["method"], "--k", str(OPTIONS["k"]), "--fps", str(OPTIONS["fps"])]
    assert curate.main(argv) == 0
    manifest = sorted(read_table(Storage(), str(out), "manifest").to_pylist(), key=lambda r: r["timestamp_s"])
    shots = sorted(read_table(Storage(), str(out), "shots").to_pylist(), key=lambda r: r["shot_index"])
    (row,) = read_table(Storage(), str(out), "videos").to_pylist()

    with httpx.Client(base_url=service, timeout=300) as client:
        r = client.post("/select", json={"uri": str(video), **OPTIONS, "clips": True})
    assert r.status_code == 200, r.text
    ans = r.json()
    # the cascade ran in both: the service embedded as few frames as the job
    assert row["frames_sampled"] == ans["video"]["frames_sampled"]
    assert row["frames_embedded"] == ans["video"]["frames_embedded"] < row["frames_sampled"]
    assert [f["timestamp_s"] for f in ans["frames"]] == [m["timestamp_s"] for m in manifest]
    assert [f["frame_index"] for f in ans["frames"]] == [m["frame_index"] for m in manifest]
    assert [f["shot_index"] for f in ans["frames"]] == [m["shot_index"] for m in manifest]
    assert [(s["start_s"], s["end_s"]) for s in ans["shots"]] == [(s["start_s"], s["end_s"]) for s in shots]
