"""The run report, aggregated as videos finish: the driver's memory does not grow with the
corpus (counts and sums, a bounded list of failures and a count of the rest).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

STAGES = ("download_s", "decode_s", "features_s", "embed_s", "select_s", "write_s")
MAX_FAILURES = 100  # failures listed in the report; the rest are counted (all are in videos/)


@dataclass
class RunTally:
    """Counts, sums and a bounded list of failures over the videos a run finished, and
    where their finalize ran against where their source was cached."""

    max_failures: int = MAX_FAILURES
    status: Counter = field(default_factory=Counter)
    frames_sampled: int = 0
    frames_embedded: int = 0
    frames_kept: int = 0
    video_seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    failures: list = field(default_factory=list)
    failures_not_listed: int = 0
    decoded_on: Counter = field(default_factory=Counter)  # node id -> videos (where known)
    finalized_elsewhere: int = 0  # finalize ran off the node that cached the source
    uncommitted: int = 0  # videos whose chunks arrived but whose finalize never returned

    @property
    def finished(self) -> int:
        """Videos committed by this run (done or failed)."""
        return self.status["done"] + self.status["failed"]

    def add(self, row: dict, source_node: str = "", ran_on: str = "") -> None:
        """Count one committed videos/ row; `source_node` is the node that cached its
        source ("" none), `ran_on` the node its finalize ran on."""
        self.status[row["status"]] += 1
        if source_node:
            self.decoded_on[source_node] += 1
            if ran_on and ran_on != source_node:
                self.finalized_elsewhere += 1
        if row["status"] == "failed":
            if len(self.failures) < self.max_failures:
                self.failures.append({"source_uri": row["source_uri"], "error": row["error"]})
            else:
                self.failures_not_listed += 1
            return
        if row["status"] != "done":
            return
        self.frames_sampled += int(row["frames_sampled"] or 0)
        self.frames_embedded += int(row["frames_embedded"] or 0)
        self.frames_kept += int(row["frames_selected"] or 0)
        self.video_seconds += float(row["duration_s"] or 0)
        for s in STAGES:
            self.stage_seconds[s] += float(row.get(s) or 0)

    def report(self, cfg, embedder: str, skipped: int, wall: float, **extra) -> dict:
        """The run report (report.json): counts per status, frames, throughput, time per
        stage, failures, placement; `extra` adds top-level entries."""
        return {
            "input": cfg.input,
            "output": cfg.output,
            "method": cfg.method,
            "k": cfg.k,
            "fps": cfg.fps,
            "embedder": embedder,
            "videos": {"done": self.status["done"], "failed": self.status["failed"], "skipped": skipped},
            "uncommitted": self.uncommitted,
            "frames_sampled": self.frames_sampled,
            "frames_embedded": self.frames_embedded,
            "frames_kept": self.frames_kept,
            "video_seconds": round(self.video_seconds, 2),
            "wall_seconds": round(wall, 2),
            "video_seconds_per_wall_second": round(self.video_seconds / wall, 2) if wall > 0 else None,
            "stage_seconds": {s: round(v, 3) for s, v in self.stage_seconds.items()},
            "failures": list(self.failures),
            "failures_not_listed": self.failures_not_listed,
            "placement": {
                "decoded_on": dict(self.decoded_on),
                "finalized_off_source_node": self.finalized_elsewhere,
            },
            **extra,
        }
