"""GPU node check: CLIP image-tower throughput per GPU, decode throughput per CPU core, and
how many decode cores one GPU needs.

    python -m benchmarks.gpu_check                       # on a machine with a CUDA GPU
    python -m benchmarks.gpu_check --batch-sizes 64,128,256 --fps 1,4

Needs only torch, open_clip, decord, numpy and the project's ``operators`` package (random
weights: the same compute as real ones). Measures:

* the open_clip image tower in fp16 (channels-last, ``torch.inference_mode``) on the GPU at
  each batch size, twice: the model alone on device-resident fp16 tensors, and end to end
  through ``operators.embed.ClipEmbedder.encode_frames`` from host uint8 frames (the job's
  path: host-to-device copy, normalisation on the GPU, embeddings back to the host);
* decode in ONE process with one decoder thread (= one CPU core), through
  ``operators.decode.iter_chunks`` at 224x224 and each ``--fps``, on the real videos, plus
  the training-free features (``operators.features.frame_features``) the cascade computes
  on every sampled frame;
* decode with N processes at once (``--procs``), one decoder thread each, over the same
  videos: the aggregate rate shows whether per-core throughput holds when a node's cores all
  decode (memory bandwidth, turbo clocks);
* then: decode cores one GPU needs for the dense job (every sampled frame embedded) and for
  the cascade (a share ``--cascade-ratio`` of sampled frames embedded, features on all).

Without CUDA it runs the model on the CPU in fp32 (a smoke test, not a GPU number).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.common import find_videos
from operators.decode import iter_chunks, probe_video


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_throughput(model_name: str, device: str, batch_sizes: list[int], seconds: float) -> list[dict]:
    """Images per second of the image tower at each batch size: model alone on device
    tensors, and end to end through ClipEmbedder from host uint8 frames."""
    import torch

    from operators.embed import ClipEmbedder
    from operators.weights import resolve_embedder

    spec = resolve_embedder("clip", model_name, "random", validate=False)
    emb = ClipEmbedder(spec, device=device, batch_size=max(batch_sizes))
    size = emb.image_size
    results = []
    for bs in batch_sizes:
        emb.batch_size = bs
        x = torch.randn(bs, 3, size, size, device=device, dtype=emb.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        host = np.random.default_rng(0).integers(0, 256, (bs, size, size, 3), dtype=np.uint8)
        row = {"batch": bs}
        with torch.inference_mode():
            for label, step in (
                ("model_only", lambda x=x: emb.model.encode_image(x)),
                ("end_to_end", lambda host=host: emb.encode_frames(host)),
            ):
                for _ in range(3):  # warm-up: cuDNN/cuBLAS algorithm choice, allocator
                    step()
                _sync(device)
                n, t0 = 0, time.perf_counter()
                while True:
                    step()
                    n += 1
                    if n >= 5 and time.perf_counter() - t0 >= seconds:
                        _sync(device)
                        if time.perf_counter() - t0 >= seconds:
                            break
                _sync(device)
                row[label] = n * bs / (time.perf_counter() - t0)
        if device.startswith("cuda"):
            row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results.append(row)
        print(f"  batch {bs:4d}: model alone {row['model_only']:8.0f} img/s, "
              f"end to end (host uint8 -> embeddings) {row['end_to_end']:8.0f} img/s", flush=True)
    return results


def decode_per_core(videos: list[str], fps: float, size: int) -> dict:
    """One process, one decoder thread: sampled frames per second and video-seconds per
    second through `iter_chunks` at `size`, and the features' frames per second."""
    from operators.features import frame_features

    frames = 0
    video_s = 0.0
    t_decode = t_feat = 0.0
    for path in videos:
        info = probe_video(path)
        video_s += info.duration_s
        chunks = iter_chunks(path, fps, size, 64, info=info, num_threads=1)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            t1 = time.perf_counter()
            if chunk is None:
                break
            frame_features(chunk.frames)
            t_decode += t1 - t0
            t_feat += time.perf_counter() - t1
            frames += len(chunk.frames)
    return {
        "fps": fps, "frames": frames, "video_s": video_s,
        "decode_frames_per_s": frames / t_decode, "decode_video_s_per_s": video_s / t_decode,
        "features_frames_per_s": frames / t_feat,
    }


def _decode_share(job: tuple[list[str], float, int]) -> int:
    videos, fps, size = job
    n = 0
    for path in videos:
        for chunk in iter_chunks(path, fps, size, 64, info=probe_video(path), num_threads=1):
            n += len(chunk.frames)
    return n


def decode_parallel(videos: list[str], fps: float, size: int, procs: int) -> dict:
    """`procs` processes, one decoder thread each, every one decoding the whole video list
    through `iter_chunks`: aggregate sampled frames per second and the same per process."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(_decode_share, [([videos[0]], fps, size)] * procs)  # warm: imports, page cache
        t0 = time.perf_counter()
        counts = pool.map(_decode_share, [(videos, fps, size)] * procs)
        wall = time.perf_counter() - t0
    total = sum(counts)
    return {"procs": procs, "fps": fps, "frames": total, "wall_s": wall,
            "frames_per_s": total / wall, "frames_per_s_per_proc": total / wall / procs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name")
    p.add_argument("--batch-sizes", default="64,128,256", help="comma-separated model batch sizes")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per model measurement")
    p.add_argument("--fps", default="1", help="comma-separated sampling rates for the decode check")
    p.add_argument("--size", type=int, default=224, help="decode size (the model's input)")
    p.add_argument("--videos", help="folder of videos (default: ../shared/videos, else samples/videos)")
    p.add_argument("--min-footage", type=float, default=300.0,
                   help="decode the video list again until it holds this many seconds")
    p.add_argument("--procs", default="",
                   help="comma-separated process counts for the parallel decode check (e.g. 4,8,16)")
    p.add_argument("--cascade-ratio", type=float, default=0.25, help="share of frames the cascade embeds")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the GPU and decode numbers and the decode cores one GPU needs."""
    args = parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible; "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} CPU cores")
    else:
        print("WARNING: no CUDA device: the model runs on the CPU in fp32 (smoke test only)")
        torch.set_num_threads(os.cpu_count() or 1)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    print(f"{args.model} image tower, {'fp16' if device == 'cuda' else 'fp32'}, random weights:")
    model = model_throughput(args.model, device, batch_sizes, args.seconds)
    best = max(model, key=lambda r: r["end_to_end"])

    found = find_videos(args.videos)
    once = sum(probe_video(v).duration_s for v in found)
    videos = found * max(1, int(np.ceil(args.min_footage / max(once, 1e-9))))
    print(f"decode, 1 process x 1 thread (one core), {args.size}x{args.size}, "
          f"{len(videos)} videos from {os.path.dirname(videos[0])}:")
    decode = []
    for fps in [float(f) for f in args.fps.split(",") if f.strip()]:
        d = decode_per_core(videos, fps, args.size)
        decode.append(d)
        gpu = best["end_to_end"]
        per_frame_core_s = 1 / d["decode_frames_per_s"]
        dense = gpu * per_frame_core_s
        cascade = gpu / args.cascade_ratio * (per_frame_core_s + 1 / d["features_frames_per_s"])
        d.update(cores_per_gpu_dense=dense, cores_per_gpu_cascade=cascade)
        print(f"  at {fps:g} fps, current: {d['decode_frames_per_s']:.1f} sampled frames/s per core "
              f"({d['decode_video_s_per_s']:.1f} video-s/s); features {d['features_frames_per_s']:.0f} frames/s")
        print(f"  -> one GPU at {gpu:.0f} img/s (batch {best['batch']}) needs {dense:.1f} decode cores "
              f"(dense: every sampled frame embedded), {cascade:.1f} cores with the cascade "
              f"(decode + features on every frame, {args.cascade_ratio:.0%} embedded)")
    parallel = []
    for procs in [int(n) for n in args.procs.split(",") if n.strip()]:
        for fps in [float(f) for f in args.fps.split(",") if f.strip()]:
            r = decode_parallel(videos, fps, args.size, procs)
            parallel.append(r)
            print(f"  {procs:2d} processes at {fps:g} fps, current: {r['frames_per_s']:.0f} sampled "
                  f"frames/s ({r['frames_per_s_per_proc']:.1f} per process)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "model": model, "decode": decode, "parallel": parallel}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
