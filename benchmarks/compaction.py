"""Tables at corpus scale: files opened and time to read a table, per-video files against
compacted shards, and what compacting costs.

    python -m benchmarks.compaction [--videos 3000] [--k 16] [--dim 512] [--out DIR]

Builds an output of N videos' tables as finalize writes them (one Parquet file per video
per table: k manifest rows with a `dim`-sized embedding, 8 shots, a 300-frame timeline, the
videos row), with the job's own writer, without decoding any video; then reads manifest/
and videos/ (framesift's `read_table`, and pyarrow's dataset reader on the folder),
compacts (`compact_output`, as framesift-compact does) and reads again. Prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

from benchmarks.common import markdown_table
from operators.compact import compact_output
from operators.storage import Storage
from operators.write import read_table, write_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=3000, help="videos in the synthetic output")
    p.add_argument("--k", type=int, default=16, help="manifest rows per video")
    p.add_argument("--dim", type=int, default=512, help="embedding size")
    p.add_argument("--out", default=None, help="where to build it (default: a temporary folder, removed)")
    return p.parse_args(argv)


def build(out: str, videos: int, k: int, dim: int) -> None:
    """Write `videos` videos' per-video files of every table."""
    rng = np.random.default_rng(0)
    storage = Storage()
    for i in range(videos):
        vid = f"{i:020x}"
        uri = f"s3://corpus/raw/video{i:07d}.mp4"
        emb = rng.standard_normal((k, dim)).astype(np.float32)
        write_table(storage, out, "manifest", vid, [
            {"video_id": vid, "source_uri": uri, "frame_index": j * 30, "timestamp_s": j * 1.0, "method": "kmeans",
             "embedder": "clip:ViT-B-32/laion2b_s34b_b79k", "score": 1.0, "rank": j, "shot_index": j // 2,
             "cluster_id": j, "clip_start_s": None, "clip_end_s": None, "embedding": emb[j].tolist(),
             "image_uri": f"s3://corpus/curated/frames/{vid}/{j * 1000:09d}.jpg"} for j in range(k)], embedding_dim=dim)
        write_table(storage, out, "shots", vid, [
            {"video_id": vid, "source_uri": uri, "shot_index": s, "start_s": s * 4.0, "end_s": s * 4.0 + 4,
             "start_frame_index": s * 120, "num_sampled_frames": 4} for s in range(8)])
        write_table(storage, out, "timeline", vid, [{"video_id": vid, "timestamps": np.arange(300, dtype=np.float32).tolist(),
                                                     "distances": rng.random(300, dtype=np.float32).tolist()}])
        write_table(storage, out, "videos", vid, [{"video_id": vid, "source_uri": uri, "status": "done", "size_bytes": 10**7,
                                                   "duration_s": 300.0, "fps": 30.0, "width": 1280, "height": 720,
                                                   "frames_sampled": 300, "frames_embedded": 36, "frames_selected": k,
                                                   "shots": 8, "k": k, "method": "kmeans", "embedder": "clip",
                                                   "finished_at": datetime.now(timezone.utc)}])


def reads(out: str) -> list[tuple[str, int, float, float]]:
    """(table, files, read_table s, pyarrow.dataset s) for manifest/ and videos/."""
    rows = []
    for table in ("manifest", "videos"):
        files = len(list(Path(out, table).glob("*.parquet")))
        t0 = time.perf_counter()
        n = read_table(Storage(), out, table).num_rows
        t1 = time.perf_counter()
        m = pads.dataset(str(Path(out, table)), format="parquet").to_table().num_rows
        t2 = time.perf_counter()
        assert n == m, (table, n, m)
        rows.append((table, files, t1 - t0, t2 - t1))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Build, read, compact, read again; print the table."""
    args = parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="framesift-compaction-")
    try:
        t0 = time.perf_counter()
        build(out, args.videos, args.k, args.dim)
        built = time.perf_counter() - t0
        before = reads(out)
        t0 = time.perf_counter()
        compact_output(Storage(), out)
        took = time.perf_counter() - t0
        after = reads(out)
        print(f"{args.videos} videos, k={args.k}, dim={args.dim}: per-video files written in {built:.1f} s; "
              f"compact_output {took:.1f} s")
        print(markdown_table(
            ["table", "files before", "read_table s", "pyarrow.dataset s", "files after", "read_table s",
             "pyarrow.dataset s", "read_table speed-up"],
            [[b[0], str(b[1]), f"{b[2]:.2f}", f"{b[3]:.2f}", str(a[1]), f"{a[2]:.2f}", f"{a[3]:.2f}",
              f"{b[2] / a[2]:.0f}x"] for b, a in zip(before, after, strict=True)]))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
