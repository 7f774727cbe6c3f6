"""framesift-dedup: the corpus near-duplicate pass (--dedup-corpus) on an existing output.

    framesift-dedup OUTPUT --threshold 0.95 [--s3-endpoint URL]
    python -m jobs.dedup OUTPUT --threshold 0.95

Drops near-duplicate videos, then frames and clips across videos, from OUTPUT/manifest/,
lists every drop in OUTPUT/dedup/*.parquet and rebuilds report.html. See operators/dedup.py.
Run it when no curation run writes to OUTPUT; running it again finds nothing new.
"""

from __future__ import annotations

import argparse
import logging
import sys

from operators.dedup import DedupError, dedup_output
from operators.storage import Storage, StorageError, is_folder


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="framesift-dedup", description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="output folder or s3:// prefix of a framesift run")
    p.add_argument("--threshold", type=float, required=True,
                   help="cosine similarity at or above which two items are near-duplicates")
    p.add_argument("--s3-endpoint", default=None, help="endpoint URL of an S3-compatible store")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 when done, 1 when OUTPUT cannot be read or deduplicated, 2 on
    a bad threshold."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if not -1.0 <= args.threshold <= 1.0:
        print("framesift-dedup: error: --threshold is a cosine similarity in [-1, 1]", file=sys.stderr)
        return 2
    storage = Storage(endpoint_url=args.s3_endpoint)
    try:
        if not is_folder(storage, args.output):
            print(f"framesift-dedup: error: OUTPUT {args.output!r} does not exist", file=sys.stderr)
            return 1
        res = dedup_output(storage, args.output, args.threshold)
    except (DedupError, StorageError, OSError) as exc:
        print(f"framesift-dedup: error: {exc}", file=sys.stderr)
        return 1
    print(f"framesift-dedup {args.threshold}: {res.videos_seen} video(s); dropped {res.dropped['video']} "
          f"video(s), {res.dropped['frame']} frame(s), {res.dropped['clip']} clip(s); "
          f"{res.files_rewritten} manifest file(s) rewritten; drops in {res.drops_uri or '(none)'}")
    from operators.report import write_html_report

    try:
        write_html_report(storage, args.output)
    except Exception as exc:  # noqa: BLE001 - the pass is done; the page can be rebuilt
        print(f"framesift-dedup: warning: report.html not rebuilt: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
