"""framesift's curation job: a folder or bucket of videos in, a curated frame dataset out.

    python -m jobs.curate INPUT OUTPUT [options]        (also: framesift-curate)

The pipeline (one Ray Data dataset, streaming):

    ListSources         tasks: list INPUT part by part, drop committed videos (resume),
                        paced by a ListingPacer actor so the listing never runs far ahead
      -> DecodeStage      CPU tasks: download, decode at model size, features; chunk rows
      -> EmbedStage       actor pool (GPU when there is one): CLIP embeddings per chunk
      -> AssemblerActor   a few actors on the driver's node, videos partitioned by id: gather
                          each video's chunk rows (embeddings only); the driver passes
                          block references only
      -> finalize_video   CPU tasks: segment, select, write frames + tables, commit

Videos are committed one by one as they finish, so a killed run keeps everything it had
committed and a re-run skips it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from jobs.assembly import AssemblyStats, News, assembler_count, assembly_feeder
from jobs.compact import RunCompactor
from jobs.config import ConfigError, CurateConfig
from jobs.tally import RunTally
from operators.finalize import FinalizeSettings, finalize_resources
from operators.pipeline import (
    SamplingOptions,
    SelectOptions,
    cascade_candidates,
    query_vector,
    sampling_for_detector,
    shot_detector_for,
)
from operators.process import lower_priority
from operators.resources import ClusterShape, Resources, cluster_shape
from operators.sources import VIDEO_EXTENSIONS, done_ids, has_inputs, listed_parts, plan_listing
from operators.storage import Storage, StorageError, check_writable
from operators.write import encode_image, read_table, write_report

if TYPE_CHECKING:
    from operators.clips import ClipSettings

log = logging.getLogger("framesift")
LISTING_TASKS = 4  # listing parts listed at once


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
    if str(f.type).startswith("float"):  # float and float | None
        conv = float
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
    """Ray settings (environment variables read by the raylet) for a local Ray the job
    starts itself, on a node of `cpus` cores: how many idle worker processes Ray keeps
    instead of killing them after a second idle. Enough for everything the job runs at once
    (two decode tasks per core, `max_inflight_videos` finalize tasks, a handful of actors),
    so that bursts of tasks do not start new Python workers."""
    return {"RAY_num_workers_soft_limit": str(2 * max(1, cpus) + max_inflight_videos + 4)}


def init_ray(cfg: CurateConfig | None = None):
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray with the job's worker
    settings (`worker_pool_env`); returns the `ray` module."""
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


@dataclass(frozen=True)
class StagePlan:
    """What each stage asks Ray for on one cluster, as the stages declare it."""

    shape: ClusterShape
    decode: Resources
    embed: Resources | None  # None: no model (the features embedder)
    embed_concurrency: int | tuple[int, int] | None
    embed_threads: int | None
    finalize: Resources
    shots: Resources | None = None  # the TransNetV2 stage's actors (None: no such stage)
    shots_concurrency: int | tuple[int, int] | None = None


def plan_stages(shape: ClusterShape, cfg: CurateConfig, with_model: bool = True) -> StagePlan:
    """Each stage's resources on a cluster of `shape` for the run `cfg` describes."""
    from operators.stages import DecodeStage, EmbedStage, TransNetStage

    shots = TransNetStage.resources(shape) if shot_detector_for(cfg.shot_detector) == "transnetv2" else None
    decode = DecodeStage.resources(shape, with_model, beside=shots)
    embed = EmbedStage.resources(shape) if with_model else None
    return StagePlan(
        shape=shape, decode=decode, embed=embed,
        embed_concurrency=EmbedStage.concurrency(shape, cfg.embed_concurrency) if with_model else None,
        embed_threads=EmbedStage.threads(shape) if with_model else None,
        finalize=finalize_resources(shape, decode, embed, clips=cfg.clips, beside=shots),
        shots=shots, shots_concurrency=TransNetStage.concurrency(shape) if shots else None,
    )


def stage_plan(ray, cfg: CurateConfig, with_model: bool = True) -> StagePlan:
    """`plan_stages` for the cluster `ray` is connected to."""
    return plan_stages(cluster_shape(ray, cfg.embed_device), cfg, with_model)


def sampling_options(cfg: CurateConfig, spec) -> SamplingOptions:
    """Which frames the run samples and which of them the model sees."""
    return SamplingOptions(
        fps=cfg.fps, size=spec.image_size, chunk_frames=cfg.chunk_frames,
        max_frames=cfg.max_frames_per_video, cascade_ratio=None if cfg.dense else cfg.cascade_ratio,
        min_candidates=cascade_candidates(cfg.k), with_model=spec.kind == "clip",
        **sampling_for_detector(shot_detector_for(cfg.shot_detector)),
    )


def select_options(cfg: CurateConfig) -> SelectOptions:
    """How the run selects each video's frames."""
    return SelectOptions(method=cfg.method, k=cfg.k, seed=cfg.seed, dedup_threshold=cfg.dedup_threshold)


def query_embedding(cfg: CurateConfig, spec) -> np.ndarray | None:
    """The run's query vector (--query / --query-image), embedded on the driver's CPU in
    the job's precision (unless that is fp16, which is GPU only), or None."""
    if not (cfg.query or cfg.query_image):
        return None
    from operators.decode import DecodeError
    from operators.embed import create_embedder

    image = None
    if cfg.query_image:
        try:
            with open(cfg.query_image, "rb") as f:
                image = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read --query-image {cfg.query_image!r}: {exc}") from exc
    embedder = create_embedder(spec, device="cpu", dtype="auto" if cfg.embed_dtype == "fp16" else cfg.embed_dtype)
    try:
        return query_vector(cfg.query, image, encode_text=embedder.encode_text,
                            encode_frames=embedder.encode_frames, image_size=embedder.image_size)
    except DecodeError as exc:
        raise ConfigError(f"cannot read --query-image {cfg.query_image!r}: {exc}") from exc


def preflight(cfg: CurateConfig, storage: Storage, list_now: bool = False):
    """Everything that can fail before work starts: find INPUT and cut its listing into
    parts (without listing it), check it holds a video, check OUTPUT is writable, resolve
    the embedder's weights. Returns (listing parts, embedder spec). With `list_now` the
    parts are listed here and the run takes their sources as listed (`listed_parts`; small
    inputs only: a test that changes a source between listing and decoding)."""
    from operators.weights import resolve_embedder

    extensions = None if cfg.all_files else VIDEO_EXTENSIONS
    parts = plan_listing(storage, cfg.input, extensions=extensions, limit=cfg.limit)
    if not has_inputs(storage, parts):
        raise JobError(f"INPUT {cfg.input!r} holds no videos")
    check_writable(storage, cfg.output)
    spec = resolve_embedder(cfg.embedder, cfg.model, cfg.pretrained, cfg.weights)
    if list_now:
        parts = listed_parts(storage, parts, cfg.limit)
    return parts, spec


def build_dataset(ray, cfg: CurateConfig, storage: Storage, parts: list, spec, plan: StagePlan | None = None,
                  done_ref=None, pacer=None, attempts=None):
    """The streaming Ray Data dataset of embedded chunk rows for the videos of `parts`
    (`plan_listing`'s listing parts) that are not committed yet: `done_ref` is the
    ObjectRef of `done_ids` (None: nothing committed), `pacer` the ListingPacer actor that
    keeps the listing from running ahead (None: not paced), `attempts` the DecodeAttempts
    actor that turns a video whose decodes keep dying into a failed row (None: not
    counted). `plan` is `stage_plan`'s
    answer for the cluster (looked up when None)."""
    import ray.data

    from operators.listing import BLOCK_BYTES, ListSources, one_video_per_block
    from operators.stages import DecodeStage, EmbedStage, one_chunk

    sampling = sampling_options(cfg, spec)
    plan = plan or stage_plan(ray, cfg, sampling.with_model)
    if plan.embed is not None and not plan.shape.embed_on_gpu and cfg.embed_dtype == "fp16":
        raise ConfigError("--embed-dtype fp16 needs a GPU, and this cluster embeds on CPUs; "
                          "use bf16, fp32 or auto")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.target_max_block_size = BLOCK_BYTES  # listing blocks pass on every ~1700 videos
    ds = ray.data.from_items([{"part": p.to_json()} for p in parts], override_num_blocks=len(parts))
    ds = ds.map_batches(
        ListSources(storage, [done_ref if done_ref is not None else np.zeros(0, "S20")], pacer, cfg.limit),
        batch_size=1, batch_format="numpy", num_cpus=0, concurrency=min(len(parts), LISTING_TASKS),
    )
    ds = one_video_per_block(ds)
    ds = ds.map_batches(
        DecodeStage(
            storage, sampling,
            encode_images=functools.partial(encode_image, image_format=cfg.image_format,
                                            quality=cfg.image_quality),
            image_max_side=cfg.max_side,
            carry_frames=kept_image_frames(cfg),
            attempts=attempts,
            segment_s=cfg.segment_s,
            span_options=plan.decode.ray_options(),
        ),
        batch_size=1,
        batch_format="numpy",
        **plan.decode.ray_options(),
    )
    # DecodeStage yields row by row: one contiguous block each (fused into its tasks)
    ds = ds.map_batches(one_chunk, batch_size=None, batch_format="pyarrow", zero_copy_batch=True,
                        **plan.decode.ray_options())
    if plan.shots is not None:
        from operators.stages import TransNetStage

        ds = ds.map_batches(
            TransNetStage,
            fn_constructor_kwargs={"device": TransNetStage.device(plan.shape),
                                   "num_threads": TransNetStage.threads(plan.shape)},
            batch_size=4,  # chunk rows: each brings its frames' 100-frame windows
            batch_format="numpy",
            compute=_actor_pool(plan.shots_concurrency),
            **plan.shots.ray_options(),
        )
    if plan.embed is not None:
        ds = ds.map_batches(
            EmbedStage,
            fn_constructor_kwargs={
                "spec": spec, "batch_size": cfg.embed_batch_size, "num_threads": plan.embed_threads,
                "dtype": cfg.embed_dtype,
            },
            batch_size=EmbedStage.rows_per_call(cfg.embed_batch_size, cfg.chunk_frames, sampling.cascade_ratio,
                                                plan.embed_threads),
            batch_format="numpy",
            compute=_actor_pool(plan.embed_concurrency),
            **plan.embed.ray_options(),
        )
    return ds


def kept_image_frames(cfg: CurateConfig) -> int:
    """The most sampled frames a video may have for the decode stage to keep every one's
    image for finalize: --keep-images-max-frames for JPEG output, 0 (never) for WebP, whose
    encoder is slow enough that encoding every sampled frame costs more than reading the k
    selected ones again."""
    return cfg.keep_images_max_frames if cfg.image_format == "jpeg" else 0


def _actor_pool(concurrency: int | tuple[int, int]):
    """An ActorPoolStrategy of N actors, or autoscaling between (MIN, MAX). Ray Data starts
    a pool at its initial size, MIN unless given: (N, N) starts all N actors at once."""
    import ray.data

    if isinstance(concurrency, int):
        return ray.data.ActorPoolStrategy(size=concurrency)
    return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])


def run(cfg: CurateConfig, listed: tuple | None = None) -> dict:
    """Run the curation job for a validated config; returns the run report (also written to
    OUTPUT/report.json, also when the run is interrupted). Raises JobError / StorageError /
    WeightsError before any work when the run cannot start. `listed` is `preflight`'s answer
    when the caller made it already (`preflight(..., list_now=True)`: a test that changes a
    source between listing and decoding).

    The driver holds no per-video state beyond the videos in flight: the listing streams
    through the dataset (paced by a ListingPacer actor), the committed ids live in the
    object store, and the report is aggregated as videos finish (RunTally)."""
    started = time.time()
    storage = Storage(endpoint_url=cfg.s3_endpoint)
    parts, spec = listed or preflight(cfg, storage)
    log.info("embedder: %s; INPUT listed in %d part(s)", spec.name, len(parts))
    settings = FinalizeSettings(
        storage=storage, output=cfg.output, select=select_options(cfg), embedder=spec.name,
        shot_detector=shot_detector_for(cfg.shot_detector),
        image_format=cfg.image_format, image_quality=cfg.image_quality, max_side=cfg.max_side,
        query=query_embedding(cfg, spec), clips=clip_settings(cfg), webdataset=cfg.format == "webdataset",
    )
    ray = init_ray(cfg)
    lower_priority(cfg.driver_niceness)  # after Ray's local daemons have started
    loop = RunLoop(ray, cfg, storage, spec, settings)
    try:
        loop.run(parts)
    finally:
        listing = loop.listing_totals()
        loop.close()
        report = loop.tally.report(
            cfg, spec.name, skipped=listing.get("skipped", 0), wall=time.time() - started,
            listing=listing, assembler=loop.assembler_stats(), split=loop.split, interrupted=not loop.completed,
        )
        if loop.shards is not None:
            report["shards"] = loop.shards
        if loop.completed:
            report = finish_off_driver(ray, storage, cfg, report)
        else:  # interrupted: the report only; the next run compacts and rolls what is left
            write_report(storage, cfg.output, report)
    if listing.get("listed", 1) == 0:
        raise JobError(f"INPUT {cfg.input!r} holds no videos")
    return report


class RunLoop:
    """The driver's loop: block references from the dataset to the run's assemblers
    (`jobs.assembly`: they gather each video's chunk rows and start its finalize on the node
    that cached its source; actors on the driver's node, or with one assembler the driver
    itself), and what they answer into the tally, the shard roller (--format webdataset) and
    the run's compactor; it tells the pacer how many videos have reached the assemblers.
    After the loop it rolls the last shards (`shards`: `ShardRoller.finish`'s answer, None
    without webdataset)."""

    PROGRESS_EVERY = 32  # videos between reports to the pacer (<< its window)

    def __init__(self, ray, cfg: CurateConfig, storage: Storage, spec, settings) -> None:
        from operators.attempts import DecodeAttempts
        from operators.listing import ListingPacer

        self.ray, self.cfg, self.storage, self.spec, self.settings = ray, cfg, storage, spec, settings
        self.tally = RunTally()
        self.assembly = AssemblyStats()
        self.assemblers: list = []
        self.feeder = None  # jobs.assembly: BlockFeeder or InProcessFeeder
        self.count = 0  # assemblers
        self.completed = False
        self.started_videos = 0
        self.split = {"videos": 0, "span_tasks": 0}  # long videos decoded in spans (--segment-s)
        self._reported = 0
        self._last_log = time.time()
        self.roller = None
        self.compactor = None
        self.shards: dict | None = None
        if cfg.format == "webdataset":
            from operators.shards import ShardRoller

            self.roller = ShardRoller(storage, cfg.output, int(cfg.shard_size_mb * 2**20))
        here = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: it lives exactly as long as the run
        on_driver_node = NodeAffinitySchedulingStrategy(here, soft=False)
        self.pacer = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node)(ListingPacer).remote()
        self.attempts = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node)(DecodeAttempts).remote()

    def listing_totals(self) -> dict:
        """The pacer's listed / skipped / emitted counts ({} when it cannot be asked)."""
        try:
            return self.ray.get(self.pacer.totals.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a report without listing counts, not no report
            return {}

    def close(self) -> None:
        """End the run's actors (worker processes): a process may run several jobs. After an
        interruption, first take what the assemblers can still tell."""
        if not self.completed and self.feeder is not None:
            self.assembly = self.feeder.interrupted()
        for actor in (self.pacer, self.attempts, *self.assemblers):
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone with its node or the cluster
                pass

    def assembler_stats(self) -> dict:
        """How full the assemblers got, and what they dropped, gave up or handed on."""
        return dataclasses.asdict(self.assembly) | {"assemblers": self.count, "actors": len(self.assemblers)}

    def run(self, parts: list) -> None:
        """Stream the dataset to the end, then wait for every video's finalize."""
        ray, cfg = self.ray, self.cfg
        plan = stage_plan(ray, cfg, self.spec.kind == "clip")
        if self.roller is not None:
            self.roller.bind(ray, **plan.finalize.ray_options())
        self.compactor = RunCompactor(ray, self.storage, cfg.output, cfg.compact_every, plan.finalize.ray_options())
        self.count = assembler_count(cfg.assemblers, ray.cluster_resources().get("CPU", 1))
        self.feeder, self.assemblers = assembly_feeder(ray, self.count, ray.put(self.settings),
                                                       plan.finalize.ray_options(), cfg.max_inflight_videos,
                                                       self._absorb)
        done_ref = ray.remote(num_cpus=0)(done_ids).remote(self.storage, cfg.output, cfg.retry_failed)
        ds = build_dataset(ray, cfg, self.storage, parts, self.spec, plan, done_ref=done_ref, pacer=self.pacer,
                           attempts=self.attempts)
        for bundle in ds.iter_internal_ref_bundles():
            for block_ref in bundle.block_refs:
                self.feeder.feed(block_ref)
        self.assembly = self.feeder.finish()
        self._progress()
        self.compactor.wait()
        self.tally.uncommitted += self.assembly.never_completed + self.assembly.given_up
        if self.roller is not None:
            self.shards = self.roller.finish(lambda: done_video_ids(self.storage, cfg.output))
        self.completed = True

    def _progress(self) -> None:
        self._reported = self.started_videos
        self.pacer.progress.remote(self.started_videos)

    def _absorb(self, news: News) -> None:
        """One assembler's News: count the videos started, commit what finalize returned."""
        self.started_videos += news.started
        self.split["videos"] += news.split_videos
        self.split["span_tasks"] += news.span_tasks
        if self.started_videos - self._reported >= self.PROGRESS_EVERY:
            self._progress()
        for vid, uri, why in news.lost:
            log.error("finalize of %s (%s) failed: %s; not committed, a re-run processes it", vid, uri, why)
            self.tally.uncommitted += 1
        for row, node, ran_on in news.committed:
            self.tally.add(row, source_node=node, ran_on=ran_on)
            if self.roller is not None:
                self.roller.committed(row)
            self.compactor.committed(row["video_id"])
            log.debug("%s %s %s", row["status"], row["video_id"], row["source_uri"])
        if time.time() - self._last_log > 10:
            log.info("videos finished: %d (%d received)", self.tally.finished, self.started_videos)
            self._last_log = time.time()


def done_video_ids(storage: Storage, output: str) -> set[str]:
    """The videos committed done in OUTPUT."""
    return {r["video_id"] for r in read_table(storage, output, "videos").to_pylist() if r["status"] == "done"}


def clip_settings(cfg: CurateConfig) -> ClipSettings | None:
    """The run's ClipSettings (--clips and its options), or None without --clips."""
    if not cfg.clips:
        return None
    from operators.clips import ClipError, ClipOptions, ClipSettings, h264_encoder

    try:
        h264_encoder()  # every re-encoded clip needs it: say so before any work
    except ClipError as exc:
        raise ConfigError(f"--clips: {exc}") from exc
    options = ClipOptions(height=cfg.clip_transcode_height(), fps=cfg.clip_fps, audio=not cfg.no_audio)
    return ClipSettings(mode=cfg.clip_mode, min_s=cfg.clip_min_s, max_s=cfg.clip_max_s, options=options)


def finish_off_driver(ray, storage: Storage, cfg: CurateConfig, report: dict) -> dict:
    """`finish_output` in a task on the driver's node, so that the driver's memory stays
    flat in the corpus (the end-of-run compaction and report.html read the whole output's
    ids and tables); here, when that task cannot run. Returns the report as written."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    task = ray.remote(num_cpus=0, max_retries=1, scheduling_strategy=here)(finish_output)
    try:
        return ray.get(task.remote(storage, cfg, report))
    except Exception as exc:  # noqa: BLE001 - the data is committed: finish it here instead
        log.warning("the end-of-run task failed (%s); finishing on the driver", str(exc).splitlines()[0])
        return finish_output(storage, cfg, report)


def finish_output(storage: Storage, cfg: CurateConfig, report: dict) -> dict:
    """The end of a run: the corpus dedup pass (--dedup-corpus), compact the tables (unless
    --compact-every 0), write report.json and report.html; returns the report. Everything is
    committed already, so a failure here is logged, not raised: `framesift-dedup OUTPUT`,
    `framesift-compact OUTPUT` / `python -m jobs.report OUTPUT` redo each part."""
    from operators.compact import compact_output
    from operators.report import write_html_report

    if cfg.dedup_corpus is not None:
        from dataclasses import asdict

        from operators.dedup import dedup_output

        try:
            report["dedup"] = asdict(dedup_output(storage, cfg.output, cfg.dedup_corpus))
        except Exception as exc:  # noqa: BLE001 - the data is committed; the pass can be redone
            log.error("the dedup pass on %s failed (run framesift-dedup on it): %s", cfg.output, exc)
    if cfg.compact_every:
        try:
            report["compaction"] = compact_output(storage, cfg.output)
        except Exception as exc:  # noqa: BLE001 - the data is committed; compaction can be redone
            log.error("compacting %s failed (run framesift-compact on it): %s", cfg.output, exc)
    write_report(storage, cfg.output, report)
    try:
        write_html_report(storage, cfg.output)
    except Exception as exc:  # noqa: BLE001 - the data is committed; the report can be redone
        log.error("writing report.html failed (run python -m jobs.report on OUTPUT): %s", exc)
    return report


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
    if "dedup" in report:
        d = report["dedup"]["dropped"]
        lines.append(f"  dedup-corpus {report['dedup']['threshold']}: dropped {d['video']} video(s), "
                     f"{d['frame']} frame(s), {d['clip']} clip(s) (see dedup/)")
    for f in report["failures"][:10]:
        lines.append(f"  failed: {f['source_uri']}: {f['error']}")
    more = v["failed"] - min(10, len(report["failures"]))
    if more > 0:
        lines.append(f"  ... and {more} more failures (see videos/)")
    if report.get("uncommitted"):
        lines.append(f"  {report['uncommitted']} video(s) not committed (see the log); a re-run processes them")
    if report.get("interrupted"):
        lines.append("  interrupted: re-run the same command to resume (committed videos are skipped)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code (0 when at least one video is
    done or everything was already done, 1 when none succeeded, 2 on bad usage, 3 when some
    videos could not be committed (a re-run processes them), 130 when interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from operators.weights import WeightsError

    try:
        cfg = config_from_args(argv)
        report = run(cfg)
    except KeyboardInterrupt:
        print("framesift: interrupted; committed videos are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
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
    if report.get("uncommitted"):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
