"""What the curation job reads from object storage: with the node-local source cache, and without.

    python -m benchmarks.s3_reads              # the six real videos, copied to 10 min of footage
    python -m benchmarks.s3_reads --runs 3     # more runs of each setting

Starts a real S3-compatible server (moto, server mode) on loopback, uploads the corpus of
`benchmarks.speed` (the real videos of ../shared/videos copied under distinct names) and
runs the job from that bucket into another, alternately with the source cache on (default)
and off (`FRAMESIFT_SOURCE_CACHE_GB=0`: finalize downloads each video again). Prints one
table: the bytes of the server's answers to GET requests (object reads; counted by a WSGI
wrapper around moto's own server app), that over the corpus's size, and the job's wall time. The job runs with the training-free
embedder, so that the reads are a visible part of the time; which embedder runs does not
change what is read.
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

from benchmarks.common import VIDEOS_DIR, free_port, markdown_table
from benchmarks.speed import build_corpus


class ByteCounter:
    """WSGI middleware: counts the response bytes (bodies) of the app it wraps, per method."""

    def __init__(self, app) -> None:
        self.app = app
        self.sent: dict[str, int] = {}

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "?")
        for chunk in self.app(environ, start_response):
            self.sent[method] = self.sent.get(method, 0) + len(chunk)
            yield chunk

    def total(self, method: str = "GET") -> int:
        return self.sent.get(method, 0)


def start_server() -> tuple[object, ByteCounter, str]:
    """A moto S3 server (moto's own WSGI app, as `python -m moto.server` serves it) on a free
    loopback port, in a thread of this process, behind a ByteCounter; (server, counter, URL)."""
    import logging
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    counter = ByteCounter(DomainDispatcherApplication(create_backend_app))
    port = free_port()
    server = make_server("127.0.0.1", port, counter, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter, f"http://127.0.0.1:{port}"


def run_job(cli: list[str], env: dict) -> float:
    """One job run in its own process (its own local Ray); returns its wall seconds."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "jobs.curate", *cli], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"job failed:\n{res.stderr[-3000:]}")
    return wall


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.s3_reads", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=str(VIDEOS_DIR), help="folder of real videos")
    p.add_argument("--minutes", type=float, default=10.0, help="footage in the corpus, at least")
    p.add_argument("--runs", type=int, default=2, help="runs of each setting, alternating")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    args = parse_args(argv)
    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    work = Path(tempfile.mkdtemp(prefix="framesift-s3reads-"))
    server, counter, endpoint = start_server()
    try:
        import s3fs

        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        corpus = build_corpus(Path(args.videos), work / "corpus", args.minutes, 1.0)
        fs.mkdir("videos")
        fs.put(str(work / "corpus") + "/", "videos/in/", recursive=True)
        size = sum(os.path.getsize(v.path) for v in corpus)
        rows = []
        for i in range(args.runs):
            for cache in ("on", "off"):
                fs.mkdir(f"out-{cache}-{i}")
                env = dict(os.environ, FRAMESIFT_SOURCE_CACHE=str(work / f"cache-{cache}-{i}"))
                if cache == "off":
                    env["FRAMESIFT_SOURCE_CACHE_GB"] = "0"
                before = counter.total("GET")
                wall = run_job(["s3://videos/in", f"s3://out-{cache}-{i}/run", "--s3-endpoint", endpoint,
                                "--embedder", "features", "--fps", "1", "--k", "16"], env)
                sent = counter.total("GET") - before
                rows.append((cache, i + 1, sent, sent / size, wall))
                print(f"[s3_reads] cache {cache}, run {i + 1}: {sent / 2**20:.1f} MiB sent, {wall:.1f} s",
                      file=sys.stderr, flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"corpus: {len(corpus)} files, {size / 2**20:.1f} MiB, in a moto S3 server on loopback; "
          f"job: --embedder features --fps 1 --k 16, each run in a fresh process with its own local Ray\n")
    print(markdown_table(["source cache", "run", "MiB read (GET)", "x corpus size", "job wall s"],
                         ([cache, str(run), f"{sent / 2**20:.1f}", f"{ratio:.2f}", f"{wall:.1f}"]
                          for cache, run, sent, ratio, wall in rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
