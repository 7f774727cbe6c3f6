"""framesift's curation job: a folder or bucket of videos in, a curated frame dataset out.

    python -m jobs.curate INPUT OUTPUT [options]        (also: framesift-curate)

The pipeline (one Ray Data dataset, streaming):

    list + resume filter (driver)
      -> DecodeStage      CPU tasks: download, decode at model size, features; chunk rows
      -> EmbedStage       actor pool (GPU when there is one): CLIP embeddings per chunk
      -> VideoAssembler   driver: gathers each video's chunk rows (embeddings only)
      -> finalize_video   CPU tasks: segment, select, write frames + tables, commit

Videos are committed one by one as they finish, so a killed run keeps everything it had
committed and a re-run skips it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections import Counter

import numpy as np

from jobs.config import ConfigError, CurateConfig
from operators.sources import VIDEO_EXTENSIONS, committed_video_ids, list_inputs
from operators.storage import Storage, StorageError, check_writable
from operators.write import encode_image, read_table, write_report

log = logging.getLogger("framesift")
DECODE_TASK_MEMORY = 512 * 2**20
# CPUs a finalize task asks for (at most; see embed_resources). Finalize is mostly I/O, so a
# fraction lets it run beside the streaming pipeline instead of queueing behind it; half a
# CPU rather than a quarter, because when a job's last videos all finish at once, four
# finalize processes per free core crowd out the embedding actor's last model calls,
# which are the job's critical path (measured on 2 cores, 12 short clips, bf16 cascade,
# 6 alternating runs each: 9.35 -> 8.68 s on average; dense and long videos unchanged).
FINALIZE_CPUS = 0.5


class JobError(RuntimeError):
    """The run cannot start or produced nothing; the message says why."""


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; option help comes from the CurateConfig field docs."""
    p = argparse.ArgumentParser(
        prog="framesift-curate",
        description="Select the frames that matter from every video under INPUT and write a "
        "curated frame dataset (frames/, manifest/, shots/, videos/, report.json) to OUTPUT. "
        "INPUT and OUTPUT are local paths or s3://bucket/prefix URIs; INPUT may also be a "
        ".txt or .parquet file listing URIs. Connects to the Ray cluster in RAY_ADDRESS, or "
        "starts a local one.",
    )
    p.add_argument("input", nargs="?", help="folder, s3:// prefix, single video or listing file")
    p.add_argument("output", nargs="?", help="output folder or s3:// prefix")
    p.add_argument("--config", help="YAML file with the same options (flags override it)")
    p.add_argument("--list-methods", action="store_true", help="print the selection methods")
    for f in dataclasses.fields(CurateConfig):
        if f.name in ("input", "output"):
            continue
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (default: {f.default})"
        if f.type in ("bool",) or isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", default=None, help=helptext)
        else:
            p.add_argument(flag, default=None, help=helptext, metavar=f.name.upper())
    return p


def config_from_args(argv: list[str] | None = None) -> CurateConfig:
    """Parse argv (YAML file first, flags over it) into a validated CurateConfig."""
    args = build_parser().parse_args(argv)
    if args.list_methods:
        from operators.select import method_names

        print("\n".join(method_names()))
        raise SystemExit(0)
    cfg = CurateConfig.from_yaml(args.config) if args.config else CurateConfig()
    for f in dataclasses.fields(CurateConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        setattr(cfg, f.name, _coerce(f, value))
    return cfg.validate()


def _coerce(f: dataclasses.Field, value):
    if isinstance(value, bool) or f.name in ("k", "embed_concurrency"):
        return value
    default = f.default
    kinds = {"fps": float, "dedup_threshold": float, "cascade_ratio": float}
    if f.name in kinds:
        conv = kinds[f.name]
    elif isinstance(default, int) or f.name in ("limit", "max_side", "max_frames_per_video"):
        conv = int
    else:
        return value
    try:
        return conv(value)
    except ValueError:
        raise ConfigError(f"--{f.name.replace('_', '-')} expects a number, got {value!r}") from None


# --------------------------------------------------------------------------- the run


def worker_pool_env(cpus: int, max_inflight_videos: int) -> dict[str, str]:
    """Ray settings (environment variables read by the raylet) for a local Ray that the job
    starts itself, for a node of `cpus` cores: the number of idle worker processes Ray keeps
    instead of killing them after one second idle. Ray's default keeps one per core, which
    the job's own actors (the embedder and Ray Data's bookkeeping actors) already exceed, so
    every burst of decode or finalize tasks started new Python workers (measured on 2 cores:
    7 worker starts in a 20 s run, each ~1 CPU-s of interpreter and imports). The job never
    runs more than two decode tasks per core, `max_inflight_videos` finalize tasks and a
    handful of actors at once, so that many are kept."""
    return {"RAY_num_workers_soft_limit": str(2 * max(1, cpus) + max_inflight_videos + 4)}


def _init_ray(cfg: CurateConfig | None = None):
    import ray

    if not ray.is_initialized():
        # only a Ray started here reads these; an existing cluster keeps its own settings
        # (set the same variables on its nodes: see cluster/README.md)
        inflight = cfg.max_inflight_videos if cfg else CurateConfig().max_inflight_videos
        for key, value in worker_pool_env(os.cpu_count() or 1, inflight).items():
            os.environ.setdefault(key, value)
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=False,
        )
    return ray


def lower_priority(niceness: int) -> int:
    """Give every thread of this process (and so the threads it starts later) a CPU niceness
    of at least `niceness` (0 or less: no change). The job's driver only coordinates: Ray
    Data's scheduling loop wakes every few milliseconds, and at niceness 0 each wake-up
    preempts a worker, which Ray runs at 15, and with it the embedding actor's other torch
    thread that waits on the preempted one (measured on 2 cores, alternating runs, driver at
    0 against 10: dense fp32 37.4 / 36.2 against 36.3 / 35.6 s, dense bf16 16.8 / 16.4
    against 16.2 / 15.8 s, cascade bf16 9.3 / 8.0 / 8.1 against 8.7 / 7.9 / 8.0 s, short
    clips). Without privileges a niceness cannot be lowered again, so the process keeps it.
    Returns the number of threads changed."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return 0
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc (macOS): there the call sets the whole process
        threads = [0]
    changed = 0
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed += 1
        except OSError:  # a thread that ended meanwhile, or a platform that refuses
            continue
    return changed


def largest_node_cpus(nodes: list[dict]) -> int:
    """The most CPUs any one alive node of `nodes` (entries of `ray.nodes()`) has, 0 when
    none reports any. A CPU embedding actor and the decode tasks beside it share one node,
    so they are sized from a node, not from the cluster's total (an actor asking for all of
    a multi-node cluster's CPUs could never be placed)."""
    return max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes if n.get("Alive")), default=0)


def _embed_resources(ray, cfg: CurateConfig) -> dict:
    """embed_resources for the cluster Ray is connected to: its largest node's CPUs, all of
    its GPUs."""
    resources = ray.cluster_resources()
    cpus = largest_node_cpus(ray.nodes()) or int(resources.get("CPU", 1))
    return embed_resources(cpus, int(resources.get("GPU", 0)), cfg)


def embed_resources(cpus: int, gpus: int, cfg: CurateConfig) -> dict:
    """Actor-pool settings for the embedding stage on a cluster of `gpus` GPUs whose nodes
    have `cpus` CPUs, and the CPUs each decode and finalize task asks for: one GPU per actor when there
    are GPUs (autoscaling between 1 and their number; decode tasks one CPU each), otherwise
    one CPU actor whose threads (each on its own slice of a batch, see
    operators.embed.splits_batches) use every core. Returns num_gpus, num_cpus,
    concurrency, threads (None = the embedder's default), decode_cpus and finalize_cpus."""
    conc = cfg.embed_concurrency
    if cfg.embed_device == "gpu" or (cfg.embed_device == "auto" and gpus):
        return {"num_gpus": 1, "num_cpus": 1, "concurrency": conc or (1, max(1, gpus)), "threads": None,
                "decode_cpus": 1.0, "finalize_cpus": FINALIZE_CPUS}
    # On CPU one actor reserves all but one core but runs torch on every core. Decode tasks
    # share the core left with a fraction each, so that up to one per core run at once and
    # fill the time the model leaves, which with the cascade is most of it (measured on 2
    # cores, 16 min of long videos: cascade 20.3 -> 19.4 s with two decode tasks at once
    # instead of one; dense unchanged).
    cpus = max(1, cpus)
    actor_cpus = max(1, cpus - 1) if cpus >= 2 else 0.5
    decode_cpus = (cpus - actor_cpus) / max(2, cpus)
    # a finalize task must fit beside the actor and one decode task
    return {"num_gpus": 0, "num_cpus": actor_cpus, "concurrency": conc or 1, "threads": cpus,
            "decode_cpus": decode_cpus, "finalize_cpus": min(FINALIZE_CPUS, cpus - actor_cpus - decode_cpus)}


def _query_vector(cfg: CurateConfig, embedder) -> np.ndarray | None:
    if cfg.query:
        return embedder.encode_text([cfg.query])[0]
    if cfg.query_image:
        from operators.decode import DecodeError, image_for_model

        try:
            with open(cfg.query_image, "rb") as f:
                image = image_for_model(f.read(), embedder.image_size)
        except (OSError, DecodeError) as exc:
            raise ConfigError(f"cannot read --query-image {cfg.query_image!r}: {exc}") from exc
        return embedder.encode_frames(image)[0]
    return None


def preflight(cfg: CurateConfig, storage: Storage):
    """Everything that can fail before work starts: list INPUT, check OUTPUT is writable,
    resolve the embedder's weights. Returns (sources to do, skipped count, embedder spec)."""
    from operators.embed import resolve_embedder

    extensions = None if cfg.all_files else VIDEO_EXTENSIONS
    sources = list_inputs(storage, cfg.input, extensions=extensions, limit=cfg.limit)
    if not sources:
        raise JobError(f"INPUT {cfg.input!r} holds no videos")
    check_writable(storage, cfg.output)
    spec = resolve_embedder(cfg.embedder, cfg.model, cfg.pretrained, cfg.weights)
    done = committed_video_ids(storage, cfg.output)
    if cfg.retry_failed and done:
        videos = read_table(storage, cfg.output, "videos").to_pylist()
        done -= {r["video_id"] for r in videos if r["status"] == "failed"}
    todo = [s for s in sources if s.video_id not in done]
    return todo, len(sources) - len(todo), spec


def build_dataset(ray, cfg: CurateConfig, storage: Storage, todo: list, spec, res: dict | None = None):
    """The streaming Ray Data dataset of embedded chunk rows for the videos in `todo`;
    `res` is embed_resources' answer for the cluster (looked up when None)."""
    import ray.data

    from operators.stages import DecodeStage, EmbedStage

    use_clip = spec.kind == "clip"
    res = (res or _embed_resources(ray, cfg)) if use_clip else None
    if res and not res["num_gpus"] and cfg.embed_dtype == "fp16":
        raise ConfigError("--embed-dtype fp16 needs a GPU, and this cluster embeds on CPUs; "
                          "use bf16, fp32 or auto")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ds = ray.data.from_items([s.to_row() for s in todo], override_num_blocks=min(len(todo), 10_000))
    ds = ds.map_batches(
        DecodeStage(
            storage, cfg.fps, size=224 if not use_clip else _model_size(spec),
            chunk_frames=cfg.chunk_frames, keep_pixels=use_clip,
            max_frames=cfg.max_frames_per_video,
            cascade_ratio=None if cfg.dense else cfg.cascade_ratio,
            cascade_min=cascade_candidates(cfg.k),
            encode_images=functools.partial(encode_image, image_format=cfg.image_format,
                                            quality=cfg.image_quality),
            image_max_side=cfg.max_side,
            carry_frames=kept_image_frames(cfg),
        ),
        batch_size=1,
        batch_format="numpy",
        num_cpus=res["decode_cpus"] if res else 1,
        # A decode task holds a chunk of frames and the decoder's buffers. Declaring it also
        # keeps Ray Data from fusing decode into the CPU embedding actor when both ask for
        # one CPU: fused, decode and model run in series in one process; apart, they
        # overlap (measured on 2 cores: dense 83 -> 71 s, cascade 35 -> 29-32 s on 16 min
        # of long videos; no change on short clips).
        memory=DECODE_TASK_MEMORY,
    )
    if res:
        ds = ds.map_batches(
            EmbedStage,
            fn_constructor_kwargs={
                "spec": spec, "batch_size": cfg.embed_batch_size, "num_threads": res["threads"],
                "dtype": cfg.embed_dtype,
            },
            batch_size=embed_rows_per_call(cfg, res["threads"]),
            batch_format="numpy",
            num_cpus=res["num_cpus"],
            num_gpus=res["num_gpus"],
            compute=_actor_pool(res["concurrency"]),
        )
    return ds


def embed_rows_per_call(cfg: CurateConfig, cpu_threads: int | None = None) -> int:
    """Chunk rows the embedding actor takes per call, so that a call usually brings the
    model `embed_batch_size` frames, and a CPU actor with `cpu_threads` threads at least
    CPU_FRAMES_PER_THREAD a thread (each thread embeds its own slice of the call; 16 cores:
    256 frames a call). A dense row holds up to `chunk_frames` frames, a cascade row only its
    candidates, about `cascade_ratio` of them, so cascade rows are gathered. Small model
    batches are slow on CPUs (bf16 ViT-B-32 on 2 cores: 49 frames/s at batch 1, 79 at 4, 85
    at 32; on 16 cores 305 frames/s in calls of 64, 342 in calls of 256) and every call is a
    round trip to the actor (measured on 2 cores, cascade job, 4 rows instead of 1 per call,
    means of 2-3 alternating runs: 15.6 -> 15.0 s on long videos in fp32, 8.2 -> 7.9 s on the
    short clips in bf16, and 12.0 -> 12.1 s, no gain, on long videos in bf16: small, and
    within the runs' spread)."""
    from operators.embed import CPU_FRAMES_PER_THREAD

    frames = max(cfg.embed_batch_size, CPU_FRAMES_PER_THREAD * (cpu_threads or 0))
    per_row = cfg.chunk_frames if cfg.dense else max(1.0, cfg.chunk_frames * cfg.cascade_ratio)
    return max(1, math.ceil(frames / per_row))


def kept_image_frames(cfg: CurateConfig) -> int:
    """The most sampled frames a video may have for the decode stage to keep every one's
    image for finalize: --keep-images-max-frames for JPEG output, 0 (never) for WebP, whose
    encoder costs ~60 ms a 1280x720 frame against JPEG's ~3 (measured here), so encoding
    every sampled frame would cost more than reading the k selected ones again."""
    return cfg.keep_images_max_frames if cfg.image_format == "jpeg" else 0


def cascade_candidates(k: int | str) -> int:
    """The fewest frames per video the cascade may cap its model calls at: k distinct
    candidates for a fixed k (fewer would force duplicate picks), the adaptive budget's
    upper bound for "auto"."""
    from operators.select import AUTO_K_MAX

    return int(k) if k != "auto" else AUTO_K_MAX


def _actor_pool(concurrency: int | tuple[int, int]):
    """An ActorPoolStrategy of N actors, or autoscaling between (MIN, MAX)."""
    import ray.data

    if isinstance(concurrency, int):
        return ray.data.ActorPoolStrategy(size=concurrency)
    return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])


def _model_size(spec) -> int:
    import open_clip

    cfg = open_clip.get_model_config(spec.model) or {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def run(cfg: CurateConfig) -> dict:
    """Run the curation job for a validated config; returns the run report (also written to
    OUTPUT/report.json). Raises JobError / StorageError / WeightsError before any work when
    the run cannot start."""
    from operators.embed import create_embedder
    from operators.finalize import FinalizeSettings, VideoAssembler, finalize_video

    started = time.time()
    storage = Storage(endpoint_url=cfg.s3_endpoint)
    todo, skipped, spec = preflight(cfg, storage)
    log.info("embedder: %s; %d video(s) to process, %d already done", spec.name, len(todo), skipped)
    query = None
    if cfg.query or cfg.query_image:
        # on the driver's CPU: the job's precision, unless that is fp16 (GPU only)
        dtype = "auto" if cfg.embed_dtype == "fp16" else cfg.embed_dtype
        query = _query_vector(cfg, create_embedder(spec, device="cpu", dtype=dtype))
    settings = FinalizeSettings(
        storage=storage, output=cfg.output, method=cfg.method, k=cfg.k, embedder=spec.name,
        seed=cfg.seed, dedup_threshold=cfg.dedup_threshold, image_format=cfg.image_format,
        image_quality=cfg.image_quality, max_side=cfg.max_side, query=query,
    )
    rows: list[dict] = []
    if todo:
        ray = _init_ray(cfg)
        lower_priority(cfg.driver_niceness)  # after Ray's local daemons have started
        # the k images (kept or read again), the tables' writes: mostly I/O (see FINALIZE_CPUS)
        res = _embed_resources(ray, cfg) if spec.kind == "clip" else None
        finalize = ray.remote(num_cpus=res["finalize_cpus"] if res else FINALIZE_CPUS, max_retries=2)(finalize_video)
        settings_ref = ray.put(settings)
        assembler = VideoAssembler()
        inflight: list = []
        last_log = time.time()

        def drain(limit: int) -> None:
            nonlocal last_log
            while len(inflight) > limit:
                ready, rest = ray.wait(inflight, num_returns=1)
                inflight[:] = rest
                row = ray.get(ready[0])
                rows.append(row)
                log.debug("%s %s %s", row["status"], row["video_id"], row["source_uri"])
                if time.time() - last_log > 10 or len(rows) == len(todo):
                    log.info("videos finished: %d / %d", len(rows), len(todo))
                    last_log = time.time()

        ds = build_dataset(ray, cfg, storage, todo, spec, res)
        for chunk in ds.iter_rows():
            payload = assembler.add(chunk)
            if payload is not None:
                inflight.append(finalize.options(**_finalize_placement(payload)).remote(payload, settings_ref))
                drain(cfg.max_inflight_videos)
        drain(0)
        if assembler.pending:
            log.error("%d video(s) never received all their chunks", assembler.pending)
    report = make_report(cfg, spec.name, rows, skipped, time.time() - started)
    write_report(storage, cfg.output, report)
    return report


def _finalize_placement(payload) -> dict:
    """Ray options that run a video's finalize on the node that decoded it, which holds the
    source it downloaded (soft: anywhere else when that node is gone or full)."""
    if not payload.node_id:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(payload.node_id, soft=True)}


def make_report(cfg: CurateConfig, embedder: str, rows: list[dict], skipped: int, wall: float) -> dict:
    """The run report: counts per status, frames, throughput and time per stage."""
    status = Counter(r["status"] for r in rows)
    done = [r for r in rows if r["status"] == "done"]
    video_s = float(sum(r["duration_s"] or 0 for r in done))
    stages = ("download_s", "decode_s", "features_s", "embed_s", "select_s", "write_s")
    return {
        "input": cfg.input,
        "output": cfg.output,
        "method": cfg.method,
        "k": cfg.k,
        "fps": cfg.fps,
        "embedder": embedder,
        "videos": {"done": status["done"], "failed": status["failed"], "skipped": skipped},
        "frames_sampled": int(sum(r["frames_sampled"] for r in done)),
        "frames_embedded": int(sum(r["frames_embedded"] for r in done)),
        "frames_kept": int(sum(r["frames_selected"] for r in done)),
        "video_seconds": round(video_s, 2),
        "wall_seconds": round(wall, 2),
        "video_seconds_per_wall_second": round(video_s / wall, 2) if wall > 0 else None,
        "stage_seconds": {s: round(sum(float(r.get(s) or 0) for r in done), 3) for s in stages},
        "failures": [{"source_uri": r["source_uri"], "error": r["error"]} for r in rows if r["status"] == "failed"],
    }


def summary(report: dict) -> str:
    """A short human-readable summary of a run report."""
    v = report["videos"]
    lines = [
        f"framesift: {v['done']} done, {v['failed']} failed, {v['skipped']} skipped "
        f"(already done) -> {report['output']}",
        f"  embedder {report['embedder']}, method {report['method']}, k={report['k']}: "
        f"kept {report['frames_kept']} of {report['frames_sampled']} sampled frames",
        f"  {report['video_seconds']} s of video in {report['wall_seconds']} s "
        f"({report['video_seconds_per_wall_second']}x real time)",
    ]
    for f in report["failures"][:10]:
        lines.append(f"  failed: {f['source_uri']}: {f['error']}")
    if len(report["failures"]) > 10:
        lines.append(f"  ... and {len(report['failures']) - 10} more failures (see videos/)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code (0 when at least one video is
    done or everything was already done, 1 when none succeeded, 2 on bad usage)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from operators.embed import WeightsError

    try:
        cfg = config_from_args(argv)
        report = run(cfg)
    except ConfigError as exc:
        print(f"framesift: error: {exc}", file=sys.stderr)
        return 2
    except (JobError, StorageError, WeightsError) as exc:
        print(f"framesift: error: {exc}", file=sys.stderr)
        return 1
    print(summary(report))
    v = report["videos"]
    if v["done"] == 0 and v["skipped"] == 0:
        print("framesift: error: no video could be processed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
