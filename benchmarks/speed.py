"""Speed benchmark: framesift against the machine's limits and a naive pipeline.

    python -m benchmarks.speed                # ~10 minutes of real footage (all six videos, repeated)
    python -m benchmarks.speed --quick        # smoke version, ~3 minutes of footage
    python -m benchmarks.speed --long-minutes 2.5  # long-video layout: each video looped
    python -m benchmarks.speed --embed-dtype fp32  # CLIP in fp32 (default: the job's, bf16
                                                   # on CPUs with native bf16)
    python -m benchmarks.speed --repeat 2     # each job twice, alternating; the faster counts

Everything is measured in one run, on the same corpus: the real videos in
``../shared/videos`` copied into a temporary folder under distinct names (so every copy
gets its own video id) until the corpus holds at least ``--minutes`` of footage. Rows:

1. decode limit: the project's decoder alone (``operators.decode.iter_chunks``, model-sized frames at
   ``--fps``), no Ray: one process, and a pool of N = cores processes;
2. model limit: the open_clip image tower alone (``operators.embed.ClipEmbedder``) on random
   uint8 frames at the job's batch size and precision, threads = cores (the faster of each
   thread on its own slice of a batch, as the job's CPU actor runs it, and torch's own
   operator threads);
3. naive baseline: a plain per-video loop, no Ray (decode every sampled frame, embed every
   one, faiss k-means);
4. the framesift job, dense (``--dense``): ``jobs.curate.run(cfg)`` timed whole;
5. the framesift job with the cascade (the default).

The binding limit of a row is the time the limits need for the work that row does: its
video-seconds at the decode pool's rate PLUS its embedded frames at the model's rate. On a
CPU-only machine decode and model share the same cores, so the times add; on a GPU node
they overlap and the limit would be their max.

All CLIP runs use the same randomly initialised ViT-B-32 (``pretrained="random"`` costs what
real weights cost), saved once to a checkpoint that the jobs load through ``--weights``:
every process then holds identical weights, so the naive loop's embeddings of every
sampled frame ARE the dense embeddings that selection quality is measured with (coverage
with the dense embeddings, and shot recall against the dense run's shots table).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import ROLE_ORDER, VIDEOS_DIR, CpuMeter, markdown_table, videos_in, wait_until_quiet
from jobs.config import CurateConfig
from operators.decode import VideoInfo, iter_chunks, probe_video, sample_indices

MODEL = "ViT-B-32"
SIZE = 224


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusVideo:
    """One file of the benchmark corpus (a copy of a real video under a distinct name)."""

    path: str
    source: str
    info: VideoInfo
    sampled: np.ndarray  # frame indices sampled at --fps


def loop_video(src: Path, dst: Path, min_seconds: float) -> int:
    """Write `src`'s video stream `n` times back to back into the Matroska file `dst` (packets
    copied, timestamps shifted; nothing re-encoded), n the fewest loops lasting at least
    `min_seconds`. Returns n."""
    import math

    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        packets = [p for p in inp.demux(s_in) if p.dts is not None and p.size]
        first = min(min(p.dts for p in packets), min(p.pts for p in packets if p.pts is not None))
        end = max((p.pts if p.pts is not None else p.dts) + (p.duration or 0) for p in packets)
        span = end - first
        loops = max(1, math.ceil(min_seconds / float(span * s_in.time_base)))
        for i in range(loops):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts = None if p.pts is None else p.pts - first + i * span
                q.dts = p.dts - first + i * span
                q.duration, q.is_keyframe, q.time_base = p.duration, p.is_keyframe, s_in.time_base
                q.stream = s_out
                out.mux(q)
    return loops


def build_long_corpus(src_dir: Path, dest: Path, long_minutes: float, fps: float) -> list[CorpusVideo]:
    """One file per real video, looped (packet copy, no re-encode) to at least
    `long_minutes`; a video already that long is copied as it is. This is the long-video
    workload (k frames out of hundreds sampled) that the product is built for."""
    sources = videos_in(src_dir)
    dest.mkdir(parents=True, exist_ok=True)
    corpus = []
    for p in sources:
        info = probe_video(str(p))
        if info.duration_s >= long_minutes * 60:
            target = dest / p.name
            shutil.copyfile(p, target)
        else:
            target = dest / f"{p.stem}_looped.mkv"
            loop_video(p, target, long_minutes * 60)
            info = probe_video(str(target))
        corpus.append(CorpusVideo(str(target), p.name, info, sample_indices(info, fps)))
    return corpus


def build_corpus(src_dir: Path, dest: Path, minutes: float, fps: float) -> list[CorpusVideo]:
    """Copy the videos of `src_dir` (all of them, in name order, then again) into `dest`,
    each copy under a distinct name, until the copies hold at least `minutes` of footage.
    Returns the corpus with each video's probe and sampled frame indices."""
    sources = videos_in(src_dir)
    if not sources:
        raise SystemExit(f"no videos in {src_dir}")
    infos = {p: probe_video(str(p)) for p in sources}
    dest.mkdir(parents=True, exist_ok=True)
    corpus: list[CorpusVideo] = []
    total, rep = 0.0, 0
    while total < minutes * 60 or len(corpus) < len(sources):
        for p in sources:
            if total >= minutes * 60 and len(corpus) >= len(sources):
                break
            target = dest / f"r{rep:02d}_{p.name}"
            shutil.copyfile(p, target)
            info = infos[p]
            corpus.append(CorpusVideo(str(target), p.name, info, sample_indices(info, fps)))
            total += info.duration_s
        rep += 1
    return corpus


# --------------------------------------------------------------------------- limits


def _decode_one(job: tuple[str, float]) -> tuple[int, float]:
    """Decode every sampled frame of one video at model size; (frames, seconds)."""
    path, fps = job
    t0 = time.perf_counter()
    n = 0
    for chunk in iter_chunks(path, fps, SIZE, 64, num_threads=1):
        n += len(chunk.frames)
    return n, time.perf_counter() - t0


def _warm(_: int) -> int:
    return os.getpid()


def decode_limit(corpus: list[CorpusVideo], fps: float, processes: int) -> tuple[int, float]:
    """Decode the whole corpus with `processes` worker processes (1 = in this process).
    Returns (frames decoded, wall seconds). Pool start-up is not timed."""
    jobs = [(v.path, fps) for v in sorted(corpus, key=lambda v: -v.info.duration_s)]
    if processes <= 1:
        t0 = time.perf_counter()
        n = sum(_decode_one(j)[0] for j in jobs)
        return n, time.perf_counter() - t0
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_warm, range(processes * 4))
        t0 = time.perf_counter()
        n = sum(f for f, _ in pool.imap_unordered(_decode_one, jobs))
        return n, time.perf_counter() - t0


def model_limit(spec, threads: int, batch_size: int, frames: int, dtype: str = "auto") -> float:
    """Frames per second of the CLIP image tower alone on random uint8 frames, at
    `batch_size` with `threads` threads in precision `dtype` (one warm-up batch not timed):
    the faster of the two ways `ClipEmbedder` can use the threads, each thread on its own
    slice of the batch (as the job's CPU actor runs it) or every operator split across
    torch's threads (faster alone where OpenMP threads spin between operators)."""
    import torch

    from operators.embed import ClipEmbedder

    previous = torch.get_num_threads()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (max(batch_size, frames), SIZE, SIZE, 3), dtype=np.uint8)
    rates = []
    for split in (True, False):
        emb = ClipEmbedder(spec, device="cpu", batch_size=batch_size, num_threads=threads, dtype=dtype,
                           split_batches=split)
        emb.encode_frames(x[:batch_size])
        t0 = time.perf_counter()
        emb.encode_frames(x[:frames])
        rates.append(frames / (time.perf_counter() - t0))
        del emb
    torch.set_num_threads(previous)
    return max(rates)


def make_random_checkpoint(path: Path, seed: int = 0) -> str:
    """Save a randomly initialised open_clip ViT-B-32 (seeded) as a state_dict file, so that
    every process of the benchmark loads the very same random weights."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=None, device="cpu")
    torch.save(model.state_dict(), path)
    return str(path)


# --------------------------------------------------------------------------- naive baseline


@dataclass
class NaiveResult:
    """The naive loop's timing and, per video path, what quality is measured with."""

    wall_s: float = 0.0
    load_s: float = 0.0
    frames: int = 0
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # dense CLIP, all sampled
    features: dict[str, np.ndarray] = field(default_factory=dict)  # training-free, all sampled
    selected: dict[str, np.ndarray] = field(default_factory=dict)  # positions into sampled


def naive_baseline(corpus: list[CorpusVideo], spec, fps: float, k: int, threads: int,
                   batch_size: int, dtype: str = "auto") -> NaiveResult:
    """A plain per-video loop with no Ray: decode every sampled frame at model size, embed
    every one with CLIP, run faiss k-means (``select_frames("kmeans")``). The timed part is
    model load + decode + embed + k-means; the training-free features kept for the quality
    measurement are computed outside it."""
    from operators.decode import decode_video
    from operators.embed import ClipEmbedder
    from operators.features import frame_features
    from operators.select import VideoFrames, select_frames

    res = NaiveResult()
    t0 = time.perf_counter()
    emb = ClipEmbedder(spec, device="cpu", batch_size=batch_size, num_threads=threads, dtype=dtype)
    res.load_s = time.perf_counter() - t0
    timed = res.load_s
    for v in corpus:
        t0 = time.perf_counter()
        dec = decode_video(v.path, fps, SIZE)
        e = emb.encode_frames(dec.frames)
        sel = select_frames("kmeans", VideoFrames(e, dec.timestamps), k, seed=0)
        timed += time.perf_counter() - t0
        if not np.array_equal(dec.frame_index, v.sampled):
            raise RuntimeError(f"{v.path}: decode_video sampled other frames than sample_indices")
        res.frames += len(dec.frames)
        res.embeddings[v.path] = e
        res.features[v.path] = frame_features(dec.frames)
        res.selected[v.path] = sel.indices
    res.wall_s = timed
    return res


# --------------------------------------------------------------------------- jobs


WARMUP_VIDEOS = 4


def warmup_folder(corpus: list[CorpusVideo], dest: Path, n: int) -> Path:
    """A folder of links to the `n` shortest corpus files, for the untimed warm-up jobs: with
    several files in flight they start the Ray workers a full run needs (decode and finalize
    tasks beside the actors), so the first timed run does not pay for starting them. Returns
    `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for v in sorted(corpus, key=lambda v: v.info.duration_s)[:n]:
        os.symlink(os.path.realpath(v.path), dest / os.path.basename(v.path))
    return dest


def run_job(corpus_dir: str, out: str, fps: float, k: int, method: str, weights: str,
            dense: bool, cascade_ratio: float, batch_size: int, dtype: str = "auto") -> tuple[dict, float]:
    """One whole ``jobs.curate.run(cfg)``, timed from the call to its return."""
    from jobs.curate import run

    cfg = CurateConfig(
        input=corpus_dir, output=out, fps=fps, k=k, method=method, embedder="clip",
        weights=weights, dense=dense, cascade_ratio=cascade_ratio, embed_batch_size=batch_size,
        embed_dtype=dtype,
    ).validate()
    t0 = time.perf_counter()
    report = run(cfg)
    wall = time.perf_counter() - t0
    if report["videos"]["failed"]:
        raise RuntimeError(f"job failed on some videos: {report['failures']}")
    return report, wall


def _job_threads(cores: int) -> int | None:
    """The threads the job gives its CPU embedding actor (None: the embedder's default, as
    on a GPU node)."""
    import ray

    from jobs.curate import stage_plan

    return stage_plan(ray, CurateConfig()).embed_threads


# --------------------------------------------------------------------------- quality


def _positions(sampled: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sampled, frame_index)
    if np.any(pos >= len(sampled)) or not np.array_equal(sampled[np.minimum(pos, len(sampled) - 1)],
                                                          frame_index):
        raise RuntimeError("a selected frame_index is not among the sampled frames")
    return pos.astype(np.int64)


def selection_quality(corpus: list[CorpusVideo], naive: NaiveResult, dense_out: str,
                      cascade_out: str) -> dict:
    """Coverage (with the dense CLIP embeddings of every sampled frame, and with the
    training-free features) and shot recall (shots of the dense run's shots table) of the
    dense and the cascade selections, matched by (video, frame_index); means over videos."""
    from operators.segment import shot_ids_from_starts
    from operators.select import coverage, shot_recall
    from operators.storage import Storage
    from operators.write import read_table

    storage = Storage()
    norm = os.path.realpath

    def by_video(out: str, table: str, column: str) -> dict[str, list]:
        t = read_table(storage, out, table).to_pydict()
        grouped: dict[str, list] = {}
        for uri, value in zip(t["source_uri"], t[column], strict=True):
            grouped.setdefault(norm(uri), []).append(value)
        return grouped

    dense_sel = by_video(dense_out, "manifest", "frame_index")
    casc_sel = by_video(cascade_out, "manifest", "frame_index")
    dense_emb = by_video(dense_out, "manifest", "embedding")
    shot_starts = by_video(dense_out, "shots", "start_frame_index")
    rows = []
    min_cos = 1.0
    for v in corpus:
        p = norm(v.path)
        emb, feats = naive.embeddings[v.path], naive.features[v.path]
        d = _positions(v.sampled, np.sort(np.asarray(dense_sel[p], np.int64)))
        c = _positions(v.sampled, np.sort(np.asarray(casc_sel[p], np.int64)))
        starts = _positions(v.sampled, np.sort(np.asarray(shot_starts[p], np.int64)))
        shots = shot_ids_from_starts(len(v.sampled), starts)
        # the dense job's stored embeddings must be the naive loop's (same weights, pixels)
        order = np.argsort(np.asarray(dense_sel[p], np.int64))
        stored = np.asarray(dense_emb[p], np.float32)[order]
        stored /= np.linalg.norm(stored, axis=1, keepdims=True)
        min_cos = min(min_cos, float(np.min(np.sum(stored * emb[d], axis=1))))
        rows.append({
            "video": os.path.basename(v.path),
            "cov_clip_dense": coverage(emb, d), "cov_clip_cascade": coverage(emb, c),
            "cov_clip_naive": coverage(emb, naive.selected[v.path]),
            "cov_feat_dense": coverage(feats, d), "cov_feat_cascade": coverage(feats, c),
            "recall_dense": shot_recall(shots, d), "recall_cascade": shot_recall(shots, c),
            "shots": int(len(starts)), "k_dense": int(len(d)), "k_cascade": int(len(c)),
        })
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.startswith(("cov", "rec"))}
    return {
        "per_video": rows,
        "mean": mean,
        "coverage_ratio": mean["cov_clip_cascade"] / mean["cov_clip_dense"],
        "feature_coverage_ratio": mean["cov_feat_cascade"] / mean["cov_feat_dense"],
        "recall_ratio": mean["recall_cascade"] / mean["recall_dense"],
        "min_video_coverage_ratio": min(r["cov_clip_cascade"] / r["cov_clip_dense"] for r in rows),
        "min_video_recall_ratio": min(r["recall_cascade"] / r["recall_dense"] for r in rows),
        "stored_vs_eval_min_cosine": min_cos,
    }


# --------------------------------------------------------------------------- table


def _fmt(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def render_table(rows: list[dict]) -> str:
    """Markdown table of the benchmark rows."""
    head = ["row", "video-s / wall-s", "frames/s", "frames sampled", "frames embedded", "wall s",
            "binding limit s", "x binding limit", "x naive (speedup)", "other load (cores)",
            "own CPU s", "x binding limit, CPU"]
    return markdown_table(head, ([
        r["name"], _fmt(r.get("vsps")), _fmt(r.get("fps")), _fmt(r.get("sampled")),
        _fmt(r.get("embedded")), _fmt(r.get("wall"), 2), _fmt(r.get("bind"), 1),
        _fmt(r.get("x_bind"), 2), _fmt(r.get("x_naive"), 2), _fmt(r.get("other"), 2),
        _fmt(r.get("cpu"), 1), _fmt(r.get("x_bind_cpu"), 2),
    ] for r in rows))


def _check(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the speed benchmark."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=str(VIDEOS_DIR), help="folder of real videos (all are used)")
    p.add_argument("--minutes", type=float, default=10.0, help="footage in the corpus, at least")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
    p.add_argument("--k", type=int, default=16, help="frames kept per video")
    p.add_argument("--method", default="kmeans", help="selection method of the jobs")
    p.add_argument("--cascade-ratio", type=float, default=CurateConfig.cascade_ratio,
                   help="the cascade job's ratio (default: the job's)")
    p.add_argument("--batch-size", type=int, default=32, help="model batch (the job's default)")
    p.add_argument("--embed-dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="CLIP precision of every row (default: the job's, bf16 on CPUs with "
                   "native bf16, else fp32)")
    p.add_argument("--model-frames", type=int, default=128, help="frames timed for the model limit")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the job can use")
    p.add_argument("--long-minutes", type=float, default=None,
                   help="long-video layout: each real video looped to at least this many minutes "
                   "(instead of copies of the short clips to --minutes)")
    p.add_argument("--quick", action="store_true", help="smoke version: --minutes 3, fewer model frames")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="before each timed row, wait up to this many seconds for other processes "
                   "on the machine to go quiet (0: do not wait)")
    p.add_argument("--repeat", type=int, default=1,
                   help="time the dense and cascade jobs this many times each, alternating, and "
                        "report the faster run of each (as the limits are the better of two)")
    p.add_argument("--json", help="also write every number to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary corpus and outputs")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, 3.0)
        args.model_frames = min(args.model_frames, 64)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the table (stdout); progress goes to stderr."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("framesift", "ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cores = max(1, args.cores)
    work = Path(tempfile.mkdtemp(prefix="framesift-speed-"))
    say = lambda msg: print(f"[speed] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    meters: dict[str, CpuMeter] = {}
    waited: list[float] = []

    def quiet() -> None:
        if args.quiet_wait > 0:
            waited.append(wait_until_quiet(args.quiet_wait))

    started = time.perf_counter()
    try:
        corpus_dir = work / "corpus"
        if args.long_minutes:
            corpus = build_long_corpus(Path(args.videos), corpus_dir, args.long_minutes, args.fps)
        else:
            corpus = build_corpus(Path(args.videos), corpus_dir, args.minutes, args.fps)
        video_s = sum(v.info.duration_s for v in corpus)
        sampled = int(sum(len(v.sampled) for v in corpus))
        say(f"corpus: {len(corpus)} files, {video_s:.1f} s of video, {sampled} frames at {args.fps} fps")

        # 1. decode limit, first (nothing else loaded: no torch, no Ray)
        quiet()
        with CpuMeter() as meters["decode1"]:
            n1, t_dec1 = decode_limit(corpus, args.fps, 1)
        quiet()
        with CpuMeter() as meters["decodeN_a"]:
            n2, t_decn_a = decode_limit(corpus, args.fps, cores)
        say(f"decode: 1 process {n1 / t_dec1:.1f} frames/s, {cores} processes {n2 / t_decn_a:.1f} frames/s")

        # 2. model limit (threads = cores), on a seeded random checkpoint that every run shares
        from operators.weights import resolve_embedder

        weights = make_random_checkpoint(work / "random_vit_b32.pt")
        spec = resolve_embedder("clip", MODEL, None, weights)
        quiet()
        with CpuMeter() as meters["model_a"]:
            model_fps_a = model_limit(spec, cores, args.batch_size, args.model_frames, args.embed_dtype)
        say(f"model: {model_fps_a:.2f} frames/s at batch {args.batch_size}, {cores} threads")

        # 3. naive baseline
        quiet()
        with CpuMeter() as meters["naive"]:
            naive = naive_baseline(corpus, spec, args.fps, args.k, cores, args.batch_size, args.embed_dtype)
        say(f"naive: {naive.wall_s:.1f} s")

        # Ray is started once, and warm-up jobs run, before any job is timed
        from jobs.curate import init_ray

        init_ray()
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        job_threads = _job_threads(cores)
        model_fps_job = None
        if job_threads and job_threads != cores:
            model_fps_job = model_limit(spec, job_threads, args.batch_size, max(32, args.model_frames // 2),
                                        args.embed_dtype)
            say(f"model at the job actor's {job_threads} thread(s): {model_fps_job:.2f} frames/s")
        t0 = time.perf_counter()
        warm_dir = warmup_folder(corpus, work / "warmup_in", WARMUP_VIDEOS)
        for is_dense in (True, False):
            run_job(str(warm_dir), str(work / f"warmup_{int(is_dense)}"), args.fps, args.k, args.method,
                    weights, is_dense, args.cascade_ratio, args.batch_size, args.embed_dtype)
        say(f"warm-up jobs (dense and cascade on the {WARMUP_VIDEOS} shortest files): "
            f"{time.perf_counter() - t0:.1f} s (not counted)")

        # 4. and 5. the job, dense then cascade (with --repeat, alternating; each run writes a
        # fresh output folder, since a re-run into the same one would find everything done)
        dense_out, casc_out = str(work / "out_dense"), str(work / "out_cascade")
        times: dict[str, list[float]] = {"dense": [], "cascade": []}
        best: dict[str, tuple[dict, float]] = {}
        for r in range(max(1, args.repeat)):
            for key, out, is_dense in (("dense", dense_out, True), ("cascade", casc_out, False)):
                quiet()
                with CpuMeter() as meter:
                    rep, t = run_job(str(corpus_dir), out if r == 0 else f"{out}_{r}", args.fps, args.k,
                                     args.method, weights, is_dense, args.cascade_ratio, args.batch_size,
                                     args.embed_dtype)
                times[key].append(t)
                say(f"{key} job: {t:.1f} s")
                if key not in best or t < best[key][1]:
                    best[key], meters[key] = (rep, t), meter
        (rep_d, t_d), (rep_c, t_c) = best["dense"], best["cascade"]
        import ray

        ray.shutdown()  # not needed any more; its idle processes stay out of the last rows
        quality = selection_quality(corpus, naive, dense_out, casc_out)

        # the limits again, after the jobs: the better of the two measurements is the limit
        quiet()
        with CpuMeter() as meters["model_b"]:
            model_fps_b = model_limit(spec, cores, args.batch_size, args.model_frames, args.embed_dtype)
        quiet()
        with CpuMeter() as meters["decodeN_b"]:
            _, t_decn_b = decode_limit(corpus, args.fps, cores)
        say(f"limits again: model {model_fps_b:.2f} frames/s, decode {n2 / t_decn_b:.1f} frames/s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    t_decn, dec_key = (t_decn_a, "decodeN_a") if t_decn_a <= t_decn_b else (t_decn_b, "decodeN_b")
    model_fps, model_key = (model_fps_a, "model_a") if model_fps_a >= model_fps_b else (model_fps_b, "model_b")
    dec_vsps = video_s / t_decn

    def bind(vs: float, embedded: int) -> float:
        return vs / dec_vsps + embedded / model_fps

    rows = [
        {"name": "1a. decode limit, 1 process", "vsps": video_s / t_dec1, "fps": n1 / t_dec1,
         "sampled": n1, "embedded": 0, "wall": t_dec1, "other": meters["decode1"].other_cores},
        {"name": f"1b. decode limit, {cores} processes", "vsps": dec_vsps, "fps": n2 / t_decn,
         "sampled": n2, "embedded": 0, "wall": t_decn, "other": meters[dec_key].other_cores},
        {"name": f"2. model limit, {cores} threads, batch {args.batch_size}",
         "vsps": model_fps / args.fps, "fps": model_fps, "embedded": args.model_frames,
         "wall": args.model_frames / model_fps, "other": meters[model_key].other_cores},
    ]
    for name, key, wall, vs, smp, emb in (
        ("3. naive loop (no Ray, dense)", "naive", naive.wall_s, video_s, naive.frames, naive.frames),
        ("4. framesift job, dense", "dense", t_d, rep_d["video_seconds"], rep_d["frames_sampled"],
         rep_d["frames_embedded"]),
        ("5. framesift job, cascade", "cascade", t_c, rep_c["video_seconds"], rep_c["frames_sampled"],
         rep_c["frames_embedded"]),
    ):
        b = bind(vs, emb)
        cpu = meters[key].own_s
        rows.append({"name": name, "vsps": vs / wall, "fps": smp / wall, "sampled": smp, "embedded": emb,
                     "wall": wall, "bind": b, "x_bind": b / wall, "x_naive": naive.wall_s / wall,
                     "other": meters[key].other_cores, "cpu": cpu, "x_bind_cpu": b * cores / cpu})
    embed_share = rep_c["frames_embedded"] / max(1, rep_c["frames_sampled"])
    q = quality
    checks = [
        (f"cascade embeds <= 25% of sampled frames: {100 * embed_share:.1f}%", embed_share <= 0.25),
        (f"cascade coverage >= 0.98 of dense: {q['coverage_ratio']:.4f} (CLIP, dense embeddings); "
         f"{q['feature_coverage_ratio']:.4f} (training-free features)", q["coverage_ratio"] >= 0.98),
        (f"cascade shot recall >= 0.98 of dense: {q['recall_ratio']:.4f}", q["recall_ratio"] >= 0.98),
        # both jobs decode every sampled frame: the speed-up cannot pass the ratio of their limits
        (f"cascade >= 3x faster than dense end to end: {t_d / t_c:.2f}x (at most "
         f"{rows[4]['bind'] / rows[5]['bind']:.2f}x with no overhead: dense / cascade binding limit)",
         t_d / t_c >= 3.0),
        (f"dense job >= 0.8 of binding limit: {rows[4]['x_bind']:.2f}", rows[4]["x_bind"] >= 0.8),
    ]
    m = q["mean"]
    from operators.precision import embed_dtype

    precision = embed_dtype(args.embed_dtype, "cpu")
    out = [
        f"framesift speed benchmark: {len(corpus)} files (copies of {len({v.source for v in corpus})} "
        f"real videos), {video_s:.1f} s of video, fps {args.fps}, {sampled} sampled frames, {cores} cores, "
        f"{MODEL} random weights {precision}, method {args.method} k={args.k}",
        "",
        render_table(rows),
        "",
        "binding limit = video-s / decode-pool rate + frames embedded / model rate (SUM: decode and "
        "model share the same CPU cores; on a GPU node it would be the max).",
        f"limits: best of two measurements, before and after the jobs: decode {n2 / t_decn_a:.1f} / "
        f"{n2 / t_decn_b:.1f} frames/s, model {model_fps_a:.2f} / {model_fps_b:.2f} frames/s.",
        "job wall time = the whole run(cfg) (listing, weights check, model loads, decode, embed, select, "
        f"JPEG + Parquet writes); Ray was started and two warm-up jobs (dense, cascade) run on the "
        f"{WARMUP_VIDEOS} shortest files before timing"
        + (f"; the faster of {len(times['dense'])} alternating runs of each: dense "
           + " / ".join(f"{t:.2f}" for t in times["dense"]) + " s, cascade "
           + " / ".join(f"{t:.2f}" for t in times["cascade"]) + " s." if len(times["dense"]) > 1 else "."),
        f"naive: model load {naive.load_s:.1f} s included; features for the quality check not timed.",
        "other load = CPU (in cores) that processes outside this benchmark used during the row "
        f"(before each row it waited for a quiet machine: {sum(waited):.0f} s in all).",
        "own CPU s = CPU seconds this benchmark's processes (with Ray's) used for the row; x binding "
        f"limit, CPU = binding limit s x {cores} cores / own CPU s: the share of the row's CPU work "
        "that decode + model at their limit rates would need, which other load disturbs much less "
        "than wall time.",
    ]
    if model_fps_job:
        out.append(f"model at the job actor's threads ({job_threads}): {model_fps_job:.2f} frames/s "
                   f"(vs {model_fps:.2f} at {cores} threads)")
    for label, rep in (("dense", rep_d), ("cascade", rep_c)):
        st = rep["stage_seconds"]
        rate = rep["frames_embedded"] / st["embed_s"] if st.get("embed_s") else float("nan")
        out.append(f"{label} job stage seconds (summed over videos): "
                   + ", ".join(f"{k_[:-2]} {v:.1f}" for k_, v in st.items())
                   + f"; model rate inside the job {rate:.2f} frames/s")
    for label in ("dense", "cascade"):
        roles = meters[label].by_role
        out.append(f"{label} job CPU by process, s (own CPU {meters[label].own_s:.1f}; a worker counts as "
                   "what it runs): " + ", ".join(f"{r} {roles.get(r, 0.0):.1f}" for r in ROLE_ORDER))
    out += [
        "",
        f"selection quality, mean over {len(q['per_video'])} videos (dense = the dense job's selection):",
        f"  coverage, CLIP dense embeddings: dense {m['cov_clip_dense']:.4f}, cascade {m['cov_clip_cascade']:.4f}, "
        f"naive {m['cov_clip_naive']:.4f}; ratio {q['coverage_ratio']:.4f} "
        f"(worst video {q['min_video_coverage_ratio']:.4f})",
        f"  coverage, training-free features: dense {m['cov_feat_dense']:.4f}, cascade {m['cov_feat_cascade']:.4f}; "
        f"ratio {q['feature_coverage_ratio']:.4f}",
        f"  shot recall (the dense run's shots): dense {m['recall_dense']:.4f}, cascade {m['recall_cascade']:.4f}; "
        f"ratio {q['recall_ratio']:.4f} (worst video {q['min_video_recall_ratio']:.4f})",
        f"  check: the dense job's stored embeddings vs the naive loop's, min cosine "
        f"{q['stored_vs_eval_min_cosine']:.4f} (1.0 = the same dense embeddings)",
        "",
        "targets:",
    ]
    out += [f"  [{_check(ok)}] {text}" for text, ok in checks]
    out.append(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)")
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "args": vars(args), "video_seconds": video_s, "sampled": sampled, "rows": rows,
                "quality": quality, "reports": {"dense": rep_d, "cascade": rep_c}, "job_times": times,
                "limits": {"decode_fps": [n2 / t_decn_a, n2 / t_decn_b], "model_fps": [model_fps_a, model_fps_b],
                           "model_fps_job_threads": model_fps_job, "job_threads": job_threads},
                "other_cores": {k_: mt.other_cores for k_, mt in meters.items()},
                "cpu_by_process": {k_: meters[k_].by_role for k_ in ("dense", "cascade")},
            }, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
