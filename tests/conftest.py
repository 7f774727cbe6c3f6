"""Shared fixtures: a real S3-compatible server (moto in server mode) on loopback, a local
Ray instance, the real videos in ../shared/videos, and small synthetic videos."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = Path(os.environ.get("FRAMESIFT_SHARED_VIDEOS", ROOT.parent / "shared" / "videos"))
SAMPLE_VIDEOS = ROOT / "samples" / "videos"

# Credentials for the loopback S3 server; set before Ray starts so workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "framesift-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "framesift-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """URL of a moto S3 server running in its own process on 127.0.0.1 (as s3fs's tests do)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    os.environ["AWS_ENDPOINT_URL"] = url
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3fs_client(s3_endpoint):
    """An s3fs filesystem talking to the loopback server."""
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (2 CPUs, like CI)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The real videos beside the project (skips the test when they are absent)."""
    if not (SHARED_VIDEOS / "Megamind.avi").exists():
        pytest.skip(f"real videos not found in {SHARED_VIDEOS}")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> str:
    """One random ViT-B-32 saved to a file (no pretrained weights are reachable here): every
    process that loads it gets the same model, where random initialisation would differ
    from process to process (the job's actors, a restarted actor, the service's replica)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_vit_b_32.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return str(path)
