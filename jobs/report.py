"""Rebuild OUTPUT/report.html (and its pages) from an output's tables.

    python -m jobs.report OUTPUT [--s3-endpoint URL]

The job writes it at the end of every run; this rebuilds it, e.g. after `framesift-compact`
or a corpus deduplication pass. See operators/report.py for what the page shows.
"""

from __future__ import annotations

import argparse
import sys

from operators.report import PAGE_VIDEOS, write_html_report
from operators.storage import Storage, StorageError, is_folder


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 when written, 1 when OUTPUT cannot be read or written."""
    p = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="output folder or s3:// prefix of a framesift run")
    p.add_argument("--s3-endpoint", default=None, help="endpoint URL of an S3-compatible store")
    p.add_argument("--page-videos", type=int, default=PAGE_VIDEOS, help=f"videos per page (default {PAGE_VIDEOS})")
    args = p.parse_args(argv)
    storage = Storage(endpoint_url=args.s3_endpoint)
    try:
        if not is_folder(storage, args.output):
            print(f"report: error: OUTPUT {args.output!r} does not exist", file=sys.stderr)
            return 1
        print(write_html_report(storage, args.output, max(1, args.page_videos)))
    except (StorageError, OSError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
