"""Integration tests of the Ray Serve application (jobs/serve.py) on loopback: the real
app on the session's local Ray, HTTP requests with httpx, a real S3 server (moto), real and
synthetic videos. CLIP runs with random weights, which exercises batching and the text
tower exactly as real weights would."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from jobs.serve import ServiceError, resolve_uri
from jobs.serve_config import ServeConfig, normalise_prefix
from tests.conftest import SHARED_VIDEOS
from tests.synthetic import make_shots_video, shot_frames, write_video

pytestmark = pytest.mark.integration

BUCKET = "framesift-serve"
TOKEN_ENV = "FRAMESIFT_TEST_SERVE_TOKEN"
TOKEN = "s3cret-token"
SHOTS = [2.0, 2.0, 2.0]  # the synthetic upload: three 2-s shots, cuts at 2 s and 4 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, s3fs_client) -> dict:
    """Videos in an allowed local folder, on the S3 server (allowed and private prefixes),
    and outside anything allowed."""
    allowed = tmp_path_factory.mktemp("allowed")
    outside = tmp_path_factory.mktemp("outside")
    shots = allowed / "shots.mp4"
    make_shots_video(shots, SHOTS, fps=10)
    write_video(allowed / "long.mp4", shot_frames(50, seed=7, size=(64, 48)), fps=2)  # 25 s
    write_video(allowed / "medium.mp4", shot_frames(32, seed=8, size=(64, 48)), fps=2)  # 16 s
    (allowed / "corrupt.mp4").write_bytes(os.urandom(4096))
    secret = outside / "secret.mp4"
    secret.write_bytes(shots.read_bytes())
    (allowed / "link.mp4").symlink_to(secret)
    s3fs_client.mkdir(BUCKET)
    for key in ("allowed/shots.mp4", "private/shots.mp4", "allowed-not/shots.mp4"):
        s3fs_client.put_file(str(shots), f"{BUCKET}/{key}")
    return {"allowed": allowed, "outside": outside, "shots": shots, "secret": secret,
            "long": allowed / "long.mp4", "medium": allowed / "medium.mp4"}


def _config(files: dict, s3_endpoint: str, **extra) -> dict:
    prefixes = [f"s3://{BUCKET}/allowed/", str(files["allowed"])]
    if SHARED_VIDEOS.exists():
        prefixes.append(str(SHARED_VIDEOS))
    small = {"autoscaling_config": None, "num_replicas": 1}
    cfg = {
        "allowed_prefixes": prefixes, "s3_endpoint": s3_endpoint,
        "embedder": "clip", "pretrained": "random",
        "max_upload_bytes": 2 * 1024 * 1024, "max_duration_s": 20, "max_frames": 24,
        "k_max": 16, "fps_max": 4, "default_fps": 2, "request_timeout_s": 90,
        "embed_chunk_frames": 4, "embed_max_batch_frames": 32, "embed_batch_wait_s": 0.25,
        "embed_num_threads": 2, "token_env": "FRAMESIFT_TEST_TOKEN_NEVER_SET",
        "ingress": {**small, "ray_actor_options": {"num_cpus": 0.25}},
        "embedding": {**small, "ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0}},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def service(ray_local, s3_endpoint, files):
    """Two applications on one Serve instance: CLIP (random weights) at '/', and a
    features-only one with bearer-token auth at '/secure'."""
    from ray import serve

    from jobs.serve import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(_config(files, s3_endpoint)), name="framesift-test", route_prefix="/")
    secure = _config(
        files, s3_endpoint, embedder="features", token_env=TOKEN_ENV,
        ingress={"autoscaling_config": None, "num_replicas": 1, "ray_actor_options": {
            "num_cpus": 0.25, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}}},
    )
    serve.run(build_app(secure), name="framesift-secure", route_prefix="/secure")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service, timeout=180) as c:
        yield c


def _upload(client: httpx.Client, path: Path, url: str = "/select", headers=None, **fields):
    data = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in fields.items()}
    with open(path, "rb") as f:
        return client.post(url, files={"video": (path.name, f, "video/mp4")}, data=data, headers=headers)


def _ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other-bucket/allowed/x.mp4",
        f"s3://{BUCKET}/private/shots.mp4",
        f"s3://{BUCKET}/allowed-not/shots.mp4",
        f"s3://{BUCKET}/allowed/../private/shots.mp4",
        f"s3://{BUCKET}/allowed/./shots.mp4",
        f"s3://user:pw@{BUCKET}/allowed/shots.mp4",
        "file:///etc/passwd",
        "/etc/passwd",
        "/data/allowed/../../etc/passwd",
        "relative/shots.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "https://example.com/video.mp4",
        "ftp://127.0.0.1/video.mp4",
        "",
    ],
)
def test_resolve_uri_refuses_outside_allowed_prefixes(uri):
    prefixes = [normalise_prefix(f"s3://{BUCKET}/allowed"), normalise_prefix("/data/allowed")]
    with pytest.raises(ServiceError) as err:
        resolve_uri(uri, prefixes)
    assert err.value.status == 403


def test_resolve_uri_normalises_then_accepts(tmp_path):
    (tmp_path / "sub").mkdir()
    prefixes = [normalise_prefix(f"s3://{BUCKET}/allowed/"), normalise_prefix(str(tmp_path))]
    assert resolve_uri(f"s3://{BUCKET}/allowed/a/b.mp4", prefixes) == f"s3://{BUCKET}/allowed/a/b.mp4"
    inside = resolve_uri(f"file://{tmp_path}/sub/../v.mp4", prefixes)
    assert inside == os.path.realpath(tmp_path / "v.mp4")


def test_config_rejects_network_prefixes_and_unknown_keys():
    from jobs.config import ConfigError

    with pytest.raises(ConfigError):
        ServeConfig.from_dict({"allowed_prefixes": ["http://10.0.0.1/videos/"]}).validate()
    with pytest.raises(ConfigError):
        ServeConfig.from_dict({"max_upload_mb": 3})
    with pytest.raises(ConfigError):
        ServeConfig.from_dict({"embedding": {"num_replica": 2}}).validate()
    with pytest.raises(ConfigError, match="embed_dtype"):
        ServeConfig.from_dict({"embed_dtype": "float16"}).validate()


def test_cluster_serve_yaml_is_a_valid_serve_and_service_config(monkeypatch):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "cluster" / "serve.yaml").read_text())
    (app,) = ServeDeploySchema.model_validate(raw).applications
    assert app.import_path == "jobs.serve:app"
    assert {d.name for d in app.deployments} == {"SelectService", "Embedder"}
    monkeypatch.setenv("FRAMESIFT_SERVE_OPTIONS", app.runtime_env["env_vars"]["FRAMESIFT_SERVE_OPTIONS"])
    monkeypatch.delenv("FRAMESIFT_SERVE_CONFIG", raising=False)
    cfg = ServeConfig.load({"k_max": 32})
    assert cfg.embedder == "clip" and cfg.allowed_prefixes and cfg.k_max == 32


def test_cli_refuses_bad_options_before_starting_ray(tmp_path, capsys):
    from jobs.serve import main

    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_frames: 0\n")
    assert main(["--config", str(bad)]) == 2
    assert main(["--allowed-prefix", "https://example.com/videos/"]) == 2
    assert "never fetched" in capsys.readouterr().out


# --------------------------------------------------------------------------- endpoints


def test_healthz_methods_and_docs(client):
    health = _ok(client.get("/healthz"))
    assert health["status"] == "ok" and health["embedder"] == "clip:ViT-B-32/random"
    listing = _ok(client.get("/methods"))
    names = [m["name"] for m in listing["methods"]]
    assert {"uniform", "kmeans", "kcenter", "shots"} <= set(names)
    kmeans = next(m for m in listing["methods"] if m["name"] == "kmeans")
    assert {"name": "niter", "default": 20} in kmeans["parameters"]
    assert kmeans["summary"] and kmeans["doc"].startswith(kmeans["summary"].split(" ")[0])
    assert listing["limits"]["k_max"] == 16
    assert client.get("/docs").status_code == 200
    spec = _ok(client.get("/openapi.json"))
    body = spec["paths"]["/select"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)


def test_upload_selects_one_frame_per_shot_with_thumbnails(client, files):
    ans = _ok(_upload(client, files["shots"], method="shots", k=3, fps=2, thumbnails="true"))
    video = ans["video"]
    assert video["duration_s"] == pytest.approx(6.0, abs=0.2)
    assert (video["width"], video["height"]) == (160, 120) and video["frames_sampled"] == 12
    assert ans["embedder"] == "clip:ViT-B-32/random" and ans["k"] == 3 and ans["method"] == "shots"
    cuts = [s["start_s"] for s in ans["shots"][1:]]
    assert len(cuts) == 2 and all(abs(c - t) <= 0.5 for c, t in zip(cuts, [2.0, 4.0], strict=True))
    assert sorted(f["shot_index"] for f in ans["frames"]) == [0, 1, 2]
    times = [f["timestamp_s"] for f in ans["frames"]]
    assert times == sorted(times)
    for f in ans["frames"]:
        img = Image.open(io.BytesIO(base64.b64decode(f["thumbnail_jpeg_b64"])))
        assert img.format == "JPEG" and img.size == (160, 120)


def test_uri_on_loopback_s3(client):
    ans = _ok(client.post("/select", json={"uri": f"s3://{BUCKET}/allowed/shots.mp4", "method": "kmeans",
                                           "k": 4, "fps": 2}))
    assert ans["video"]["source"] == f"s3://{BUCKET}/allowed/shots.mp4"
    assert len(ans["frames"]) == 4 and ans["video"]["frames_sampled"] == 12
    assert all(f["cluster_id"] >= 0 for f in ans["frames"])


def test_local_real_video_with_clips_and_thumbnail_size(client):
    if not (SHARED_VIDEOS / "Megamind.avi").exists():
        pytest.skip("real videos not found")
    from operators.select import method_names

    method = "clips" if "clips" in method_names() else "kcenter"
    ans = _ok(client.post("/select", json={
        "uri": str(SHARED_VIDEOS / "Megamind.avi"), "method": method, "k": 6, "fps": 1,
        "clips": True, "thumbnails": True}))
    assert ans["video"]["width"] == 720 and ans["video"]["frames_sampled"] == 12
    assert ans["clips"] and all(f["clip"]["start_s"] <= f["timestamp_s"] <= f["clip"]["end_s"]
                                for f in ans["frames"])
    assert {c["source"] for c in ans["clips"]} == {"method" if method == "clips" else "shot"}
    sizes = {Image.open(io.BytesIO(base64.b64decode(f["thumbnail_jpeg_b64"]))).size for f in ans["frames"]}
    assert max(max(s) for s in sizes) <= 320


def test_text_query_and_query_image(client, files):
    from operators.select import method_names

    method = "query" if "query" in method_names() else "kmeans"
    ans = _ok(client.post("/select", json={"uri": str(files["shots"]), "method": method, "k": 2, "fps": 2,
                                           "query": "a red square on a blue background"}))
    assert ans["query"] == "text" and len(ans["frames"]) == 2
    buf = io.BytesIO()
    Image.fromarray(shot_frames(1, seed=1)[0]).save(buf, format="PNG")
    with open(files["shots"], "rb") as f:
        r = client.post("/select", data={"method": method, "k": "2", "fps": "2"},
                        files={"video": ("v.mp4", f), "query_image": ("q.png", buf.getvalue(), "image/png")})
    assert _ok(r)["query"] == "image"


def test_k_auto_and_too_many_frames_are_capped(client, files):
    ans = _ok(client.post("/select", json={"uri": str(files["medium"]), "k": "auto", "fps": 2,
                                           "method": "kcenter"}))
    assert ans["video"]["frames_capped"] and ans["video"]["frames_sampled"] <= 24
    assert 1 <= ans["k"] <= 16


def test_cross_request_batching(service, client, files):
    """Concurrent requests' frame chunks share model batches."""
    from ray import serve

    results: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=service, timeout=180) as c:
            results.append(_upload(c, files["shots"], method="uniform", k=2, fps=2).status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    stats = serve.get_deployment_handle("Embedder", "framesift-test").stats.remote().result()
    assert stats["max_batch_requests"] >= 2 and stats["max_batch_frames"] > 4, stats


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "uri",
    ["s3://other-bucket/allowed/shots.mp4", f"s3://{BUCKET}/private/shots.mp4",
     f"s3://{BUCKET}/allowed/../private/shots.mp4", "file:///etc/passwd", "/etc/hostname",
     "http://169.254.169.254/latest/meta-data/", "https://127.0.0.1/v.mp4", "SECRET", "LINK", "DOTDOT"],
)
def test_uris_outside_allowed_prefixes_get_403(client, files, uri):
    uri = {"SECRET": str(files["secret"]), "LINK": str(files["allowed"] / "link.mp4"),
           "DOTDOT": f"{files['allowed']}/../{files['outside'].name}/secret.mp4"}.get(uri, uri)
    r = client.post("/select", json={"uri": uri})
    assert r.status_code == 403, r.text
    assert r.json()["detail"]


def test_limits_413_and_408(client, files, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    r = _upload(client, big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/select", json={"uri": str(files["long"]), "fps": 0.5})
    assert r.status_code == 413 and "25.0 s" in r.json()["detail"]
    r = client.post("/select", content=b'{"uri": "' + b"x" * 70000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/select", json={"uri": str(files["shots"]), "timeout_s": 0.05})
    assert r.status_code == 408 and "deadline" in r.json()["detail"]
    r = client.post("/select", json={"uri": f"s3://{BUCKET}/allowed/missing.mp4"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "must be an object"),
        ({"uri": "SHOTS", "method": "nope"}, 422, "unknown method"),
        ({"uri": "SHOTS", "k": 0}, 422, "positive integer"),
        ({"uri": "SHOTS", "k": 17}, 422, "between 1 and 16"),
        ({"uri": "SHOTS", "k": "lots"}, 422, "positive integer"),
        ({"uri": "SHOTS", "fps": -1}, 422, "fps"),
        ({"uri": "SHOTS", "fps": 100}, 422, "fps"),
        ({"uri": "SHOTS", "colour": "red"}, 422, "colour"),
        ({"uri": "SHOTS", "method": "kmeans", "params": {"bogus": 1}}, 422, "bogus"),
        ({"method": "kmeans"}, 422, "give a 'uri'"),
        ({"uri": "CORRUPT"}, 422, "not a decodable video"),
        ({"uri": "SHOTS", "query": "   "}, 422, "query"),
        ({"uri": "SHOTS", "method": "query"}, 422, "needs a query"),
    ],
)
def test_bad_json_requests_get_a_clear_4xx(client, files, body, status, needle):
    if isinstance(body, dict):
        names = {"SHOTS": str(files["shots"]), "CORRUPT": str(files["allowed"] / "corrupt.mp4")}
        body = json.dumps({k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}).encode()
    r = client.post("/select", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_bad_uploads_then_a_good_request(client, files, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(20000))
    r = _upload(client, corrupt)
    assert r.status_code == 422 and "not a decodable video" in r.json()["detail"]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert _upload(client, empty).status_code == 422
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    assert _upload(client, text).status_code == 422
    r = _upload(client, files["shots"], uri=str(files["shots"]))
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = client.post("/select", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code in (400, 422)
    r = client.post("/select", files={"query_image": ("q.png", b"not an image")},
                    data={"uri": str(files["shots"])})
    assert r.status_code == 422 and "query_image" in r.json()["detail"]
    # the service is still up and answers a good request
    assert _ok(client.get("/healthz"))["status"] == "ok"
    assert len(_ok(_upload(client, files["shots"], method="uniform", k=2, fps=1))["frames"]) == 2


# --------------------------------------------------------------------------- auth + features


def test_bearer_token_and_features_embedder(client, files):
    assert client.get("/secure/healthz").status_code == 200
    r = client.post("/secure/select", json={"uri": str(files["shots"])})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    bad = {"Authorization": "Bearer wrong"}
    assert client.post("/secure/select", json={"uri": str(files["shots"])}, headers=bad).status_code == 401
    assert client.get("/secure/methods").status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/secure/methods", headers=good).status_code == 200
    ans = _ok(_upload(client, files["shots"], url="/secure/select", headers=good, method="shots", k=3, fps=2))
    assert ans["embedder"] == "features-v1" and len(ans["frames"]) == 3
    r = client.post("/secure/select", json={"uri": str(files["shots"]), "query": "a cat"}, headers=good)
    assert r.status_code == 422 and "CLIP" in r.json()["detail"]
    assert np.isfinite([f["score"] for f in ans["frames"]]).all()
