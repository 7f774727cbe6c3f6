"""The curation job against an object store that fails a share of requests.

    python -m benchmarks.s3_faults                     # 0% and 30% faults, 2 runs each
    python -m benchmarks.s3_faults --shares 0,0.3,0.5 --runs 1

Starts a moto S3 server on loopback and, in front of it, the tests' fault-injecting proxy
(tests/faultproxy.py: 503 SlowDown, connection resets, slow answers, bodies cut short under
their full Content-Length), uploads the real videos of ../shared/videos plus one key the
proxy answers 404 for, and runs the job (each run in its own process and local Ray) through
the proxy, alternating the shares. Prints one table: the requests the store received, the
faults injected by kind, the job's own whole-transfer retries (its "retrying" log lines),
videos done / failed, whether every done video's frames equal those of the first run without
faults, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import VIDEOS_DIR, markdown_table, videos_in
from benchmarks.s3_reads import start_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.s3_faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=str(VIDEOS_DIR), help="folder of real videos")
    p.add_argument("--shares", default="0,0.3", help="fault shares to compare, comma-separated")
    p.add_argument("--runs", type=int, default=2, help="runs of each share, alternating")
    p.add_argument("--seed", type=int, default=1, help="the proxy's first seed (one more per run)")
    p.add_argument("--kinds", default=None,
                   help="fault kinds, comma-separated (default: 503,reset,slow,truncate; 'short' cuts bodies "
                        "without a Content-Length, which only the job's byte count catches)")
    return p.parse_args(argv)


def _frames(fs, out: str) -> tuple[dict, dict]:
    """(status per source URI, sorted (frame_index, timestamp) per done source URI)."""
    import io

    import pyarrow.parquet as pq

    def table(name: str) -> list[dict]:
        rows = []
        for f in fs.find(f"{out}/{name}"):
            rows += pq.read_table(io.BytesIO(fs.cat_file(f))).to_pylist()
        return rows

    status = {r["source_uri"]: r["status"] for r in table("videos")}
    frames: dict = {}
    for r in table("manifest"):
        frames.setdefault(r["source_uri"], []).append((r["frame_index"], round(r["timestamp_s"], 6)))
    return status, {k: sorted(v) for k, v in frames.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the job at each fault share and print the table."""
    from tests.faultproxy import KINDS, FaultProxy

    args = parse_args(argv)
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    shares = [float(s) for s in args.shares.split(",")]
    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    work = Path(tempfile.mkdtemp(prefix="framesift-s3faults-"))
    server, _, endpoint = start_server()
    rows, reference = [], None
    try:
        import s3fs

        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        fs.mkdir("videos")
        videos = videos_in(args.videos)
        for v in videos:
            fs.put(str(v), f"videos/in/{v.name}")
        fs.put(str(videos[0]), "videos/in/gone" + videos[0].suffix)
        seed = args.seed
        for i in range(args.runs):
            for share in shares:
                proxy = FaultProxy(endpoint, share=share, kinds=kinds, seed=seed, permanent={"in/gone": 404}).start()
                seed += 1
                out = f"videos/out-{share}-{i}"
                env = dict(os.environ, FRAMESIFT_SOURCE_CACHE=str(work / f"cache-{share}-{i}"))
                t0 = time.perf_counter()
                res = subprocess.run(
                    [sys.executable, "-m", "jobs.curate", "s3://videos/in", f"s3://{out}", "--s3-endpoint",
                     proxy.url, "--embedder", "features", "--fps", "1", "--k", "16"],
                    env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                proxy.stop()
                status, frames = _frames(fs, out)
                if share == 0 and reference is None:
                    reference = frames
                done = sum(s == "done" for s in status.values())
                same = "n/a" if reference is None else "yes" if frames == reference else "no"
                faults = "/".join(str(proxy.counts[k]) for k in kinds)
                retries = res.stderr.count("retrying ")
                rows.append([f"{share:.0%}", str(i + 1), str(proxy.counts["requests"]), faults, str(retries),
                             f"{done} / {len(status) - done}", same, f"{wall:.1f}"])
                print(f"[s3_faults] share {share}, run {i + 1}: exit {res.returncode}, {wall:.1f} s",
                      file=sys.stderr, flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"corpus: {len(videos)} real videos + 1 key answered 404, in a moto S3 server behind the fault "
          "proxy; job: --embedder features --fps 1 --k 16, each run in a fresh process with its own local Ray\n")
    print(markdown_table(["faults", "run", "requests", "/".join(kinds), "job retries",
                          "done / failed", "frames = clean run", "wall s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
