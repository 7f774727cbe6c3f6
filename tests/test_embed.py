"""The CLIP path with random weights (see ../shared/MODELS.md) and the weights loading path."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.embed import ClipEmbedder, FeatureEmbedder, create_embedder
from operators.precision import embed_dtype
from operators.threads import batch_slices, splits_batches
from operators.weights import EmbedderSpec, WeightsError, resolve_embedder


@pytest.fixture(scope="module")
def random_clip() -> ClipEmbedder:
    torch.manual_seed(0)
    return create_embedder(resolve_embedder("clip", pretrained="random"), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def random_clip_file(random_clip, tmp_path_factory) -> Path:
    """random_clip's weights saved once (0.6 GB) for the tests that load a checkpoint file;
    alone in its folder, under a name a user might give it."""
    path = tmp_path_factory.mktemp("random_clip") / "my_clip.pt"
    torch.save(random_clip.model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)


def test_image_embeddings_have_model_shape_and_unit_norm(random_clip, frames):
    emb = random_clip.encode_frames(frames)
    assert emb.shape == (6, 512) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert random_clip.name == "clip:ViT-B-32/random"


def test_batching_does_not_change_results(random_clip, frames):
    one_batch = random_clip.encode_frames(frames)
    random_clip.batch_size = 1
    try:
        per_frame = random_clip.encode_frames(frames)
    finally:
        random_clip.batch_size = 4
    assert np.allclose(one_batch, per_frame, atol=1e-4)


ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
HASWELL = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    ("n", "batch", "workers"),
    [(0, 32, 2), (1, 32, 2), (5, 32, 2), (64, 32, 2), (65, 32, 2), (200, 32, 2), (33, 32, 1), (7, 4, 3), (1000, 32, 16)],
)
def test_batch_slices_cover_every_frame_once_in_equal_slices_shared_evenly(n, batch, workers):
    slices = batch_slices(n, batch, workers)
    covered = np.concatenate([np.arange(n)[s] for s in slices]) if slices else np.zeros(0, int)
    assert np.array_equal(covered, np.arange(n))  # every frame once, in order
    sizes = [s.stop - s.start for s in slices]
    assert all(0 < size <= batch for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1
    if n >= workers:
        assert len(slices) % workers == 0  # every worker gets as many slices
    if len(slices) > workers:
        assert n > (len(slices) - workers) * batch  # one round fewer would overfill a slice


def test_batches_are_split_across_threads_on_every_multithreaded_cpu_embedder():
    assert splits_batches("cpu", 2) and splits_batches("cpu", 16)
    assert not splits_batches("cpu", 1)  # nothing to split
    assert not splits_batches("cuda", 2) and not splits_batches("cuda:0", 8)


def test_cpu_threads_split_the_batch_and_embed_exactly_as_one_call(random_clip_file, frames):
    spec = resolve_embedder("clip", weights=str(random_clip_file))
    threads = torch.get_num_threads()
    try:
        whole = ClipEmbedder(spec, device="cpu", batch_size=4, num_threads=2, dtype="fp32",
                             split_batches=False)
        split = ClipEmbedder(spec, device="cpu", batch_size=4, num_threads=2, dtype="fp32",
                             split_batches=True)
        assert split.workers == 2 and torch.get_num_threads() == 1
        calls: list[tuple[str, int]] = []
        encode_image = split.model.encode_image

        def recorded(x):
            calls.append((threading.current_thread().name, len(x)))
            return encode_image(x)

        split.model.encode_image = recorded
        a, b = whole.encode_frames(frames), split.encode_frames(frames)
    finally:
        torch.set_num_threads(threads)
    assert np.allclose(a, b, atol=1e-5)
    # 6 frames, batches of at most 4, 2 threads: two slices of 3, run in the pool's threads
    assert sorted(n for _, n in calls) == [3, 3]
    assert all(name.startswith("clip-image") for name, _ in calls)
    with pytest.raises(ValueError, match="224"):
        split.encode_frames(np.zeros((2, 100, 100, 3), np.uint8))


def test_precision_follows_the_hardware():
    assert embed_dtype("auto", "cuda:0", HASWELL) == "fp16"
    assert embed_dtype("auto", "cpu", ZEN4) == "bf16"
    assert embed_dtype("auto", "cpu", GRAVITON3) == "bf16"
    assert embed_dtype("auto", "cpu", HASWELL) == "fp32"  # bf16 would be emulated: slower
    assert embed_dtype("auto", "cpu", "") == "fp32"
    assert embed_dtype("fp32", "cpu", ZEN4) == "fp32" and embed_dtype("bf16", "cpu", HASWELL) == "bf16"
    with pytest.raises(ValueError, match="GPU"):
        embed_dtype("fp16", "cpu", ZEN4)
    with pytest.raises(ValueError, match="fp32"):
        embed_dtype("half", "cpu", ZEN4)


def test_bf16_embeddings_match_fp32(random_clip, frames, tmp_path):
    path = tmp_path / "w.pt"
    torch.save({k: v.float() for k, v in random_clip.model.state_dict().items()}, path)
    spec = resolve_embedder("clip", weights=str(path))
    fp32 = ClipEmbedder(spec, device="cpu", batch_size=4, dtype="fp32")
    bf16 = ClipEmbedder(spec, device="cpu", batch_size=4, dtype="bf16")
    assert fp32.model.visual.conv1.weight.dtype == torch.float32
    assert bf16.model.visual.conv1.weight.dtype == torch.bfloat16
    a, b = fp32.encode_frames(frames), bf16.encode_frames(frames)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert np.min(np.sum(a * b, axis=1)) > 0.999
    texts = ["a dog on a beach", "a city at night"]
    assert np.min(np.sum(fp32.encode_text(texts) * bf16.encode_text(texts), axis=1)) > 0.999
    # building from a checkpoint skips the random initialisation, and puts torch's back after
    t = torch.ones(3)
    torch.nn.init.zeros_(t)
    assert not t.any()


def test_text_and_image_towers_share_a_space(random_clip):
    text = random_clip.encode_text(["a dog on a beach", "a city at night"])
    assert text.shape == (2, random_clip.dim)
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)


def test_wrong_frame_size_is_refused(random_clip):
    with pytest.raises(ValueError, match="224"):
        random_clip.encode_frames(np.zeros((1, 100, 100, 3), np.uint8))


def test_weights_file_loads_through_the_users_path(random_clip_file, random_clip, frames):
    path = random_clip_file
    spec = resolve_embedder("clip", weights=str(path))
    assert spec.checkpoint == str(path) and spec.name == "clip:ViT-B-32/file:my_clip.pt"
    loaded = create_embedder(spec, device="cpu")
    assert np.allclose(loaded.encode_frames(frames), random_clip.encode_frames(frames), atol=1e-5)
    # a directory holding the checkpoint works too
    spec_dir = resolve_embedder("clip", weights=str(path.parent))
    assert spec_dir.checkpoint == str(path)


@pytest.mark.parametrize("layout", ["plain.pt", "wrapped.pt", "plain.safetensors"])
def test_mapped_checkpoint_load_matches_open_clips_loader(tmp_path, random_clip, layout):
    import open_clip
    import torch.utils.serialization
    from safetensors.torch import save_file

    from operators.torch_patches import load_checkpoint_mapped, skip_weight_init

    state = {k: v.float().contiguous() for k, v in random_clip.model.state_dict().items()}
    path = tmp_path / layout
    if layout == "wrapped.pt":  # a training checkpoint: {"state_dict": {"module.<name>": ...}}
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    reference = open_clip.create_model("ViT-B-32", pretrained=str(path)).eval()
    with skip_weight_init():
        model = open_clip.create_model("ViT-B-32", pretrained=None)
    load_checkpoint_mapped(model, str(path))
    path.unlink()  # the mapped pages stay readable
    model.eval()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(model.encode_image(x), reference.encode_image(x))
    # the loader's overrides are undone
    assert "load_state_dict" not in vars(model)
    assert torch.utils.serialization.config.load.mmap is False


def test_mapped_checkpoint_load_is_strict(tmp_path, random_clip):
    from operators.torch_patches import load_checkpoint_mapped

    state = dict(random_clip.model.state_dict())
    state.pop("visual.proj")
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    import open_clip

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(RuntimeError, match="visual.proj"):
        load_checkpoint_mapped(model, str(path))
    assert "load_state_dict" not in vars(model)


def test_embedding_actor_sets_passive_openmp_waits_before_torch_loads():
    import subprocess
    import sys

    probe = (
        "import os, sys; from operators.process import passive_openmp_waits as p; "
        "first = p(); value = os.environ.get('OMP_WAIT_POLICY'); import torch; "
        "print(first, value, p())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "PASSIVE", "False"]  # too late once torch is loaded
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own setting wins
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "ACTIVE", "False"]


def test_embedding_actor_freezes_its_startup_objects_and_later_garbage_is_still_collected(random_clip_file):
    import gc

    from operators.chunk_row import ChunkRow
    from operators.stages import EmbedStage

    assert gc.get_freeze_count() == 0
    try:
        stage = EmbedStage(resolve_embedder("clip", weights=str(random_clip_file)), batch_size=4, dtype="fp32")
        # the modules of torch, open_clip and the model's objects: far more than a handful
        assert gc.get_freeze_count() > 100_000
        row = ChunkRow("v", "v.mp4", features=np.zeros((2, 8), np.float32), frames=np.zeros((2, 224, 224, 3), np.uint8),
                       group_of=np.arange(2))
        out = stage(row.to_batch())
        assert out["embedding"].shape == (1, 2, 512)
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # a cycle made afterwards is still found
    finally:
        gc.unfreeze()  # this test process goes on; an actor keeps its objects frozen until exit


def test_weights_from_environment_variable(random_clip_file, monkeypatch):
    monkeypatch.setenv("FRAMESIFT_CLIP_WEIGHTS", str(random_clip_file))
    assert resolve_embedder("clip", validate=False).checkpoint == str(random_clip_file)


def test_mismatched_checkpoint_fails_with_model_name(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"not": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="ViT-B-32"):
        resolve_embedder("clip", weights=str(path))


def test_truncated_checkpoint_fails_at_resolve_not_in_the_actor(tmp_path, random_clip_file):
    """The check maps the file instead of reading it, and still catches a file cut short
    (an interrupted copy) before any video is read."""
    good = random_clip_file
    assert resolve_embedder("clip", weights=str(good)).checkpoint == str(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="ViT-B-32"):
        resolve_embedder("clip", weights=str(cut))


def test_unavailable_pretrained_tag_fails_fast_and_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FRAMESIFT_CLIP_WEIGHTS", raising=False)
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        resolve_embedder("clip", "ViT-B-32", "laion2b_s34b_b79k")
    msg = str(err.value)
    assert "ViT-B-32" in msg and "laion2b_s34b_b79k" in msg and "--weights" in msg
    assert time.monotonic() - t0 < 30  # no long download retries


def test_unknown_tag_and_missing_path_are_clear():
    with pytest.raises(WeightsError, match="no pretrained tag"):
        resolve_embedder("clip", "ViT-B-32", "no-such-tag")
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_embedder("clip", weights="/nonexistent/clip.pt")


def test_auto_falls_back_to_features_loudly(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FRAMESIFT_CLIP_WEIGHTS", raising=False)
    spec = resolve_embedder("auto", "ViT-B-32", "laion2b_s34b_b79k")
    assert spec == EmbedderSpec("features")
    assert "features" in caplog.text and "--weights" in caplog.text
    assert isinstance(create_embedder(spec), FeatureEmbedder)


def test_weights_from_object_storage_and_per_node_resolution(
    tmp_path, random_clip, random_clip_file, frames, s3fs_client, monkeypatch
):
    """An s3:// checkpoint is downloaded into the node's cache; a worker whose node lacks the
    driver's resolved path resolves the user's --weights again (multi-node clusters)."""
    from dataclasses import replace

    from operators.weights import local_checkpoint

    s3fs_client.mkdir("weights-bucket")
    s3fs_client.put(str(random_clip_file), "weights-bucket/clip/w.pt")
    monkeypatch.setenv("FRAMESIFT_CACHE", str(tmp_path / "cache"))
    spec = resolve_embedder("clip", weights="s3://weights-bucket/clip/w.pt")
    assert spec.checkpoint.startswith(str(tmp_path / "cache")) and spec.name.endswith("file:w.pt")
    elsewhere = replace(spec, checkpoint="/path/only/on/the/driver/w.pt")
    again = local_checkpoint(elsewhere)
    assert again == spec.checkpoint
    assert np.allclose(create_embedder(elsewhere).encode_frames(frames[:2]),
                       random_clip.encode_frames(frames[:2]), atol=1e-5)
    with pytest.raises(WeightsError, match="cannot download"):
        resolve_embedder("clip", weights="s3://weights-bucket/clip/missing.pt")


def test_service_replica_resolves_an_s3_checkpoint_the_driver_downloaded(
    tmp_path, random_clip, random_clip_file, frames, s3fs_client, monkeypatch
):
    """The service's Embedder gets the whole spec: a replica on a node that lacks the
    driver's downloaded copy loads the user's s3:// checkpoint, not the pretrained tag."""
    import gc

    from jobs.serve import Embedder, embedder_args
    from jobs.serve_config import ServeConfig

    s3fs_client.mkdir("serve-weights")
    s3fs_client.put(str(random_clip_file), "serve-weights/clip/w.pt")
    monkeypatch.setenv("FRAMESIFT_CACHE", str(tmp_path / "driver-cache"))
    spec = resolve_embedder("clip", weights="s3://serve-weights/clip/w.pt")
    args = list(embedder_args(ServeConfig(), spec))
    args[0] = {**args[0], "checkpoint": "/only/on/the/driver/w.pt"}  # another node
    monkeypatch.setenv("FRAMESIFT_CACHE", str(tmp_path / "replica-cache"))
    try:
        replica = Embedder.func_or_class(*args)
    finally:
        gc.unfreeze()
    assert (tmp_path / "replica-cache").exists()  # downloaded again on the replica's node
    assert np.allclose(replica._model.encode_frames(frames[:2]), random_clip.encode_frames(frames[:2]), atol=1e-5)
