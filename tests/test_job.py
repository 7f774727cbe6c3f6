"""The curation job end to end, on real Ray, real videos, a real S3 server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jobs import curate
from jobs.config import ConfigError, CurateConfig
from operators.features import FEATURE_DIM
from operators.finalize import FINALIZE_CPUS
from operators.resources import ClusterShape, largest_node_cpus
from operators.storage import Storage
from operators.write import TABLES, read_table, schema_of
from tests.conftest import ROOT
from tests.synthetic import make_shots_video

pytestmark = pytest.mark.integration

# Hard cuts listed in ../shared/videos/SOURCES.md
BOUNDARIES = {
    "Megamind.avi": [4.13, 6.46, 8.38],
    "big_buck_bunny_0_30.webm": [11.80, 15.67, 22.96],
}


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_videos) -> Path:
    """Two real videos, one synthetic, and three broken files."""
    d = tmp_path_factory.mktemp("corpus")
    for name in BOUNDARIES:
        shutil.copy(shared_videos / name, d / name)
    make_shots_video(d / "synthetic_three_shots.mp4", [3.0, 3.0, 3.0], fps=10)
    data = (shared_videos / "cockatoo.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "notes.mp4").write_text("not a video, just text\n" * 50)
    (d / "empty.webm").write_bytes(b"")
    (d / "README.txt").write_text("ignored: not a video extension")
    return d


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("out") / "curated"
    argv = [str(corpus), str(out), "--embedder", "features", "--method", "shots", "--fps", "2", "--k", "8"]
    code = curate.main(argv)
    return out, code, argv


def test_local_run_exits_zero_and_records_every_input(local_run):
    out, code, _ = local_run
    assert code == 0
    videos = {r["source_uri"].rsplit("/", 1)[-1]: r for r in read_table(Storage(), str(out), "videos").to_pylist()}
    assert set(videos) == {*BOUNDARIES, "synthetic_three_shots.mp4", "truncated.mp4", "notes.mp4", "empty.webm"}
    for name in (*BOUNDARIES, "synthetic_three_shots.mp4"):
        assert videos[name]["status"] == "done", videos[name]["error"]
        assert videos[name]["frames_sampled"] > 0 and videos[name]["embedder"] == "features-v1"
    for name in ("truncated.mp4", "notes.mp4", "empty.webm"):
        assert videos[name]["status"] == "failed"
        assert videos[name]["error"]
    assert "empty" in videos["empty.webm"]["error"]
    report = json.loads((out / "report.json").read_text())
    assert report["videos"] == {"done": 3, "failed": 3, "skipped": 0}


def test_tables_have_their_schemas(local_run):
    out, _, _ = local_run
    for table in TABLES:
        schema = schema_of(table, FEATURE_DIM)
        files = list((out / table).glob("*.parquet"))
        assert len(files) == 1 and files[0].name.startswith("part-"), files  # compacted at the end
        for f in files:
            assert pq.read_schema(f).equals(schema, check_metadata=False), (table, f)


def test_manifest_rows_point_at_written_frames(local_run):
    out, _, _ = local_run
    manifest = read_table(Storage(), str(out), "manifest").to_pylist()
    by_video: dict[str, list] = {}
    for row in manifest:
        by_video.setdefault(row["video_id"], []).append(row)
        assert Path(row["image_uri"]).is_file()
        assert row["method"] == "shots" and len(row["embedding"]) > 0
        ms = int(Path(row["image_uri"]).stem)
        assert abs(ms / 1000 - row["timestamp_s"]) < 0.001
        assert f"frames/{row['video_id']}/" in row["image_uri"]
    assert len(by_video) == 3 and all(1 <= len(rows) <= 8 for rows in by_video.values())
    # written frames are full resolution (Megamind is 720x528)
    mega = next(r for r in manifest if r["source_uri"].endswith("Megamind.avi"))
    assert Image.open(mega["image_uri"]).size == (720, 528)


def test_shot_boundaries_found_within_half_a_second(local_run):
    out, _, _ = local_run
    shots = read_table(Storage(), str(out), "shots").to_pylist()
    for name, truth in BOUNDARIES.items():
        starts = sorted(r["start_s"] for r in shots if r["source_uri"].endswith(name))[1:]
        for t in truth:
            assert min(abs(np.array(starts) - t)) <= 0.5, (name, t, starts)
        assert len(starts) <= len(truth) + 1, (name, starts)  # at most one spurious (fades)


def test_shots_method_covers_every_shot_of_the_synthetic_video(local_run):
    out, _, _ = local_run
    manifest = read_table(Storage(), str(out), "manifest").to_pylist()
    rows = [r for r in manifest if r["source_uri"].endswith("synthetic_three_shots.mp4")]
    times = np.array([r["timestamp_s"] for r in rows])
    for lo, hi in ((0, 3), (3, 6), (6, 9)):
        assert np.any((times >= lo) & (times < hi)), times


def test_second_run_writes_nothing_new(local_run, capsys):
    out, _, argv = local_run
    before = {k: v for k, v in _tree(out).items() if not k.startswith("report")}
    assert curate.main(argv) == 0
    after = {k: v for k, v in _tree(out).items() if not k.startswith("report")}
    assert after == before
    report = json.loads((out / "report.json").read_text())
    assert report["videos"] == {"done": 0, "failed": 0, "skipped": 6}
    assert "6 skipped" in capsys.readouterr().out


def test_crashed_run_resumes_only_uncommitted_videos(local_run, tmp_path):
    out, _, argv = local_run
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    (shard,) = (copy / "videos").glob("part-*.parquet")
    rows = pq.read_table(shard)
    victim = rows.column("video_id")[0].as_py()
    pq.write_table(rows.slice(1), shard)  # as if the worker died before committing this video
    assert curate.main([argv[0], str(copy), *argv[2:]]) == 0
    report = json.loads((copy / "report.json").read_text())
    assert report["videos"]["skipped"] == 5
    assert report["videos"]["done"] + report["videos"]["failed"] == 1
    assert sorted(read_table(Storage(), str(copy), "videos").column("video_id").to_pylist()) == sorted(
        rows.column("video_id").to_pylist())
    assert victim in pq.read_table(copy / "videos").column("video_id").to_pylist()


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "vit_b_32_random.pt"
    torch.save(model.state_dict(), path)
    return path


def test_s3_to_s3_with_clip_weights_file(s3_endpoint, s3fs_client, shared_videos, clip_weights, ray_local, tmp_path):
    bucket = "framesift-in"
    s3fs_client.mkdir(bucket)
    s3fs_client.put(str(shared_videos / "Megamind.avi"), f"{bucket}/videos/a/Megamind.avi")
    s3fs_client.put(str(ROOT / "samples/videos/cityCC0.mpg"), f"{bucket}/videos/b/city.mpg")
    s3fs_client.pipe(f"{bucket}/videos/b/broken.mp4", b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    s3fs_client.mkdir("framesift-out")
    out = "s3://framesift-out/run1"
    argv = [
        f"s3://{bucket}/videos", out, "--s3-endpoint", s3_endpoint, "--embedder", "clip",
        "--weights", str(clip_weights), "--method", "kmeans", "--k", "4", "--fps", "1",
    ]
    assert curate.main(argv) == 0
    storage = Storage(endpoint_url=s3_endpoint)
    videos = {r["source_uri"]: r for r in read_table(storage, out, "videos").to_pylist()}
    assert videos[f"s3://{bucket}/videos/a/Megamind.avi"]["status"] == "done"
    assert videos[f"s3://{bucket}/videos/b/city.mpg"]["status"] == "done"
    assert videos[f"s3://{bucket}/videos/b/broken.mp4"]["status"] == "failed"
    manifest = read_table(storage, out, "manifest").to_pylist()
    assert len(manifest) == 8
    for row in manifest:
        assert row["embedder"] == "clip:ViT-B-32/file:vit_b_32_random.pt"
        assert len(row["embedding"]) == 512
        assert abs(np.linalg.norm(row["embedding"]) - 1) < 1e-2
        assert row["image_uri"].startswith(out + "/frames/")
        assert s3fs_client.exists(row["image_uri"])
    # each video was downloaded once, by its decode task; finalize read that copy (on this,
    # the only node) and removed it, and the failed video's copy went at once
    from operators.source_cache import cache_dir

    ids = {r["video_id"] for r in videos.values()}
    left = os.listdir(cache_dir()) if os.path.isdir(cache_dir()) else []
    assert [n for n in left if n.split(".")[0] in ids] == []
    # the re-run against S3 is a no-op too
    keys = sorted(s3fs_client.find("framesift-out/run1/videos"))
    assert curate.main(argv) == 0
    assert sorted(s3fs_client.find("framesift-out/run1/videos")) == keys
    report = json.loads(s3fs_client.cat("framesift-out/run1/report.json"))
    assert report["videos"]["skipped"] == 3


def test_cascade_embeds_a_share_but_never_fewer_candidates_than_k(shared_videos, clip_weights, ray_local, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(shared_videos / "vtest.avi", src / "vtest.avi")  # 80 frames at 1 fps, people walking
    common = [str(src), "--embedder", "clip", "--weights", str(clip_weights), "--fps", "1", "--k", "20"]
    storage = Storage()

    def embedded(out: str, *extra: str) -> tuple[int, int]:
        assert curate.main([*common[:1], out, *common[1:], *extra]) == 0
        (row,) = read_table(storage, out, "videos").to_pylist()
        assert row["status"] == "done" and row["frames_selected"] == 20
        return row["frames_embedded"], row["frames_sampled"]

    dense, n = embedded(str(tmp_path / "dense"), "--dense")
    assert dense == n == 80
    # 5% of 80 frames would give 4 + 1 candidates (one cap per chunk of 64 and 16 frames);
    # the cap rises to the chunks' shares of k = 20 (16 + 4), still far below dense
    share, _ = embedded(str(tmp_path / "cascade"), "--cascade-ratio", "0.05")
    assert 5 < share <= 20


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.curate", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def test_cli_help_explains_options():
    res = _cli("--help")
    assert res.returncode == 0
    for flag in ("--fps", "--k", "--method", "--embedder", "--weights", "--image-format", "--limit", "--config"):
        assert flag in res.stdout


def test_missing_input_and_empty_input_fail_with_message(tmp_path):
    res = _cli(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert res.returncode == 1 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _cli(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert res.returncode == 1 and "holds no videos" in res.stderr


def test_missing_bucket_fails_before_work(s3_endpoint, tmp_path):
    res = _cli("s3://no-such-bucket/videos", str(tmp_path / "out"), "--s3-endpoint", s3_endpoint)
    assert res.returncode == 1 and "no-such-bucket" in res.stderr


def test_unwritable_output_fails_fast(tmp_path):
    (tmp_path / "in").mkdir()
    make_shots_video(tmp_path / "in" / "v.mp4", [1.0], fps=5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _cli(str(tmp_path / "in"), str(blocker / "out"), "--embedder", "features")
    assert res.returncode == 1 and "not writable" in res.stderr


def test_clip_without_weights_fails_before_reading_any_video(tmp_path):
    (tmp_path / "in").mkdir()
    make_shots_video(tmp_path / "in" / "v.mp4", [1.0], fps=5)
    res = _cli(str(tmp_path / "in"), str(tmp_path / "out"), "--embedder", "clip", env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1
    assert "ViT-B-32" in res.stderr and "laion2b_s34b_b79k" in res.stderr and "--weights" in res.stderr
    assert not (tmp_path / "out" / "videos").exists()


def test_bad_options_are_usage_errors(tmp_path):
    res = _cli(str(tmp_path), str(tmp_path / "out"), "--method", "nope")
    assert res.returncode == 2 and "unknown --method" in res.stderr
    res = _cli(str(tmp_path), str(tmp_path / "out"), "--k", "0")
    assert res.returncode == 2 and "--k" in res.stderr


def test_yaml_config_and_listing_file(tmp_path, ray_local):
    make_shots_video(tmp_path / "a.mp4", [2.0, 2.0], fps=10, seed=3)
    make_shots_video(tmp_path / "b.mp4", [2.0, 2.0], fps=10, seed=7)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two videos\n{tmp_path / 'a.mp4'}\n{tmp_path / 'b.mp4'}\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("fps: 2\nk: 3\nmethod: kcenter\nembedder: features\nimage-format: webp\nlimit: 1\n")
    out = tmp_path / "out"
    assert curate.main([str(listing), str(out), "--config", str(cfg)]) == 0
    manifest = read_table(Storage(), str(out), "manifest").to_pylist()
    assert {r["source_uri"] for r in manifest} == {str(tmp_path / "a.mp4")}  # limit 1, sorted
    assert len(manifest) == 3 and all(r["image_uri"].endswith(".webp") for r in manifest)
    assert all(r["method"] == "kcenter" for r in manifest)


def test_query_image_method_and_auto_budget(tmp_path, shared_videos, ray_local):
    """--method aks with a query image finds the shot the image comes from; --k auto records
    the budget it chose per video."""
    from operators.decode import read_frames

    video = tmp_path / "bbb.webm"
    shutil.copy(shared_videos / "big_buck_bunny_0_30.webm", video)
    frame = read_frames(str(video), np.array([int(19.3 * 24)]))[0]  # inside the 15.67-22.96 s shot
    Image.fromarray(frame).save(tmp_path / "query.png")
    out = tmp_path / "out"
    argv = [str(video), str(out), "--embedder", "features", "--fps", "2", "--k", "4",
            "--method", "aks", "--query-image", str(tmp_path / "query.png")]
    assert curate.main(argv) == 0
    times = [r["timestamp_s"] for r in read_table(Storage(), str(out), "manifest").to_pylist()]
    assert any(15.67 <= t <= 22.96 for t in times), times

    out_auto = tmp_path / "auto"
    assert curate.main([str(video), str(out_auto), "--embedder", "features", "--fps", "2", "--k", "auto"]) == 0
    row = read_table(Storage(), str(out_auto), "videos").to_pylist()[0]
    assert 1 <= row["k"] <= 32 and row["frames_selected"] == row["k"]


def test_query_method_without_query_is_a_usage_error(tmp_path):
    res = _cli(str(tmp_path), str(tmp_path / "out"), "--method", "aks")
    assert res.returncode == 2 and "--query" in res.stderr


@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_cpu_embedding_leaves_room_for_decode_and_finalize(cpus):
    plan = curate.plan_stages(ClusterShape.of(cpus, 0), CurateConfig())
    assert plan.embed.gpus == 0 and plan.embed_threads == cpus
    # the actor, one decode task per core at most, and a finalize task must fit, or Ray
    # would never schedule decode (or finalize) beside the actor
    spare = cpus - plan.embed.cpus
    assert 0 < plan.decode.cpus <= spare
    assert spare / plan.decode.cpus == max(2, cpus)  # decode tasks that can run at once
    assert 0.25 <= plan.finalize.cpus <= FINALIZE_CPUS
    assert plan.embed.cpus + plan.decode.cpus + plan.finalize.cpus <= cpus


@pytest.mark.parametrize("cpus", [2, 16])
def test_a_cpu_transnetv2_stage_leaves_room_for_decode_and_finalize(cpus):
    plan = curate.plan_stages(ClusterShape.of(cpus, 0), CurateConfig(shot_detector="transnetv2"))
    assert plan.shots is not None and plan.shots.gpus == 0 and plan.shots_concurrency == 1
    assert 0 < plan.decode.cpus and 0 < plan.finalize.cpus
    assert plan.embed.cpus + plan.shots.cpus + plan.decode.cpus + plan.finalize.cpus <= cpus
    assert curate.plan_stages(ClusterShape.of(cpus, 0), CurateConfig()).shots is None


@pytest.mark.parametrize("dense,chunk,ratio,batch,threads", [
    (True, 64, 0.12, 32, None), (True, 16, 0.12, 32, None), (False, 64, 0.12, 32, None),
    (False, 64, 0.25, 32, None), (False, 64, 0.12, 256, None), (False, 4, 0.1, 32, None),
    (True, 64, 0.12, 32, 2), (False, 64, 0.12, 32, 2), (True, 64, 0.12, 32, 16), (False, 64, 0.12, 32, 16),
])
def test_embedding_calls_gather_rows_to_fill_a_model_batch(dense, chunk, ratio, batch, threads):
    from operators.stages import EmbedStage
    from operators.threads import CPU_FRAMES_PER_THREAD

    def rows_per_call(threads: int | None = None) -> int:
        return EmbedStage.rows_per_call(batch, chunk, None if dense else ratio, threads)

    rows = rows_per_call(threads)
    per_row = chunk if dense else max(1.0, chunk * ratio)  # frames a row brings to the model
    want = max(batch, CPU_FRAMES_PER_THREAD * (threads or 0))  # a CPU actor's threads each get enough
    assert rows >= 1 and rows * per_row >= want  # a call fills a batch ...
    assert rows == 1 or (rows - 1) * per_row < want  # ... without holding more rows than that
    if threads == 2:  # the 2-core actor: one dense row, as many cascade rows as without threads
        assert rows == rows_per_call()


def test_driver_lowers_the_priority_of_all_its_threads_once():
    import subprocess
    import sys

    # relative to the niceness the test process has (a job run earlier in it lowered it)
    probe = """
import os, threading
from operators.process import lower_priority
stop = threading.Event()
early = threading.Thread(target=stop.wait); early.start()
nice = lambda: sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')})
base = os.getpriority(os.PRIO_PROCESS, 0); target = base + 5
print(base, lower_priority(0), nice(), lower_priority(target), nice(), lower_priority(target - 2), nice())
late = threading.Thread(target=stop.wait); late.start()
print(os.getpriority(os.PRIO_PROCESS, late.native_id))
stop.set()
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    base, none, before, changed, after, again, still = first.split(" ", 6)
    target = int(base) + 5
    assert int(base) <= 14
    # no-op at 0; every thread (the main one, ours, any library's) lowered; never raised
    # back; threads started later inherit it
    assert (none, before) == ("0", f"[{base}]")
    assert int(changed) >= 2 and after == f"[{target}]"
    assert (again, still) == ("0", f"[{target}]") and second == str(target)


def test_driver_niceness_is_checked():
    with pytest.raises(ConfigError, match="driver-niceness"):
        CurateConfig(input="in", output="out", driver_niceness=20).validate()


def test_cpu_embedding_is_sized_from_one_node_not_the_cluster():
    def node(cpus, alive=True, gpus=0):
        res = {"CPU": float(cpus), "memory": 1e9, **({"GPU": float(gpus)} if gpus else {})}
        return {"NodeID": "n", "Alive": alive, "Resources": res}

    # a head without CPUs, two 16-core workers and a 32-core one that is gone: an actor of
    # 16 threads fits on a worker; one sized from the 32 CPUs alive would fit on no node
    nodes = [node(0), node(16), node(16), node(32, alive=False)]
    assert largest_node_cpus(nodes) == 16
    assert largest_node_cpus([node(8), node(4, gpus=1)]) == 8
    assert largest_node_cpus([node(0)]) == 0 and largest_node_cpus([]) == 0
    plan = curate.plan_stages(ClusterShape.of(largest_node_cpus(nodes), 0), CurateConfig())
    assert plan.embed_threads == 16 and plan.embed.cpus <= 16


def test_images_are_kept_for_jpeg_output_only():
    assert curate.kept_image_frames(CurateConfig()) == 256
    assert curate.kept_image_frames(CurateConfig(keep_images_max_frames=0)) == 0
    # WebP encodes ~20x slower than JPEG: encoding every sampled frame would cost more than
    # reading the selected ones again
    assert curate.kept_image_frames(CurateConfig(image_format="webp")) == 0


def test_gpu_embedding_decodes_on_whole_cpus():
    plan = curate.plan_stages(ClusterShape.of(16, 2), CurateConfig())
    assert plan.embed.gpus == 1 and plan.embed_concurrency == (1, 2) and plan.decode.cpus == 1.0


@pytest.mark.parametrize("cpus, gpus", [(1, 0), (2, 0), (16, 0), (16, 2)])
def test_local_ray_keeps_an_idle_worker_for_everything_the_job_runs_at_once(cpus, gpus):
    cfg = CurateConfig()
    plan = curate.plan_stages(ClusterShape.of(cpus, gpus), cfg)
    spare = cpus - (0 if gpus else plan.embed.cpus)
    decode_at_once = int(spare / plan.decode.cpus)
    embed_actors = plan.embed_concurrency if isinstance(plan.embed_concurrency, int) else plan.embed_concurrency[1]
    ray_data_actors = 3  # Ray Data's stats, autoscaling-coordinator and actor-location actors
    env = curate.worker_pool_env(cpus, cfg.max_inflight_videos)
    kept = int(env["RAY_num_workers_soft_limit"])
    # below this Ray kills idle workers after a second and starts new ones for the next tasks
    assert kept >= decode_at_once + cfg.max_inflight_videos + embed_actors + ray_data_actors


@pytest.mark.parametrize("flags, message", [
    (["--embed-dtype", "half"], "--embed-dtype must be one of auto, fp32, bf16, fp16"),
    (["--embed-dtype", "fp16", "--embed-device", "cpu"], "fp16 needs GPU embedding"),
])
def test_bad_embedding_precision_is_a_usage_error(tmp_path, flags, message):
    from jobs.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        curate.config_from_args([str(tmp_path), str(tmp_path / "out"), *flags])
    assert curate.config_from_args([str(tmp_path), str(tmp_path / "o"), "--embed-dtype", "bf16"]).embed_dtype == "bf16"
