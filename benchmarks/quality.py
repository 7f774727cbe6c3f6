"""Quality benchmark of framesift's shot detection and frame selection.

``python -m benchmarks.quality [--workdir DIR] [--fps 4] [--trials 30] [--decoder project]``
prints one table:

* shot-boundary precision / recall / F1 (tolerance 0.5 s) on the real hard-cut videos of
  ../shared/videos, false boundaries on its two no-cut videos, recall of the labelled hard
  cuts of the motion-graphics video, and P / R / F1 on soft-transition videos made with
  ffmpeg's xfade (fade, dissolve, wipeleft, pixelize) between real clips; PySceneDetect's
  ContentDetector and AdaptiveDetector run in the same process on the same files;
* shot recall at k = number of true shots and coverage (mean best cosine similarity of
  every sampled frame to the selection), per selection method, against ``uniform``;
* needle retrieval: a 2-4 s piece of one real video spliced into another one at least
  25 s long (big_buck_bunny, vtest, wannaworktogether) at a random time, the query a needle frame that was not sampled (taken between two sampled
  frames), embedded with the same features; share of trials where a selected frame
  falls inside the needle at k = 8.

Embeddings are the project's training-free features (no pretrained CLIP weights exist on
the build machines), for selection as well as for shots.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.common import VIDEOS_DIR, markdown_table
from benchmarks.quality_data import (
    HARD_CUT_TRUTH,
    NEGATIVE_TRUTH,
    PARTIAL_TRUTH,
    decode_sequential,
    soft_transition_set,
)
from operators.features import frame_features
from operators.segment import boundary_times, detect_shots, shot_ids_from_starts
from operators.select import VideoFrames, coverage, select_frames, shot_recall

TOLERANCE_S = 0.5
SELECTION_METHODS = ["uniform", "kmeans", "kcenter", "dpp", "mmr", "shots", "scenes", "clips"]
QUERY_ROWS = ["query", "aks", "its"]
MIN_HOST_S = 25.0


@dataclass
class Video:
    """One benchmark video: sampled timestamps, features and its true boundaries."""

    name: str
    path: str
    ts: np.ndarray
    feats: np.ndarray
    truth: list[float]


def load(path: str, fps: float, decoder: str) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, features) of ``path`` sampled at ``fps`` with the chosen decoder."""
    if decoder == "pyav":
        ts, frames = decode_sequential(path, fps)
    else:
        from operators.decode import decode_video

        decoded = decode_video(path, fps)
        ts, frames = decoded.timestamps, decoded.frames
    return np.asarray(ts, dtype=np.float64), frame_features(frames)


def match(found: list[float], truth: list[float], tol: float = TOLERANCE_S) -> tuple[int, int, int]:
    """One-to-one matching within ``tol`` seconds, nearest pairs first: (tp, fp, fn)."""
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth))
    used_f, used_t = set(), set()
    for dist, i, j in pairs:
        if dist <= tol and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    tp = len(used_f)
    return tp, len(found) - tp, len(truth) - tp


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (1.0 where nothing was to be found and nothing was found)."""
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def framesift_boundaries(video: Video) -> list[float]:
    """Boundary times from ``segment.detect_shots`` with its defaults."""
    return boundary_times(video.ts, detect_shots(video.feats, video.ts)).tolist()


def pyscenedetect_boundaries(path: str, detector: str) -> list[float]:
    """Boundary times from PySceneDetect's ContentDetector or AdaptiveDetector (defaults)."""
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    det = ContentDetector() if detector == "content" else AdaptiveDetector()
    scenes = detect(path, det)
    return [float(start.seconds) for start, _ in scenes[1:]]


def boundary_cells(videos: dict[str, list[Video]], detect) -> dict[str, str]:
    """Boundary columns of one detector row, ``detect(video) -> boundary times``."""
    cells = {}
    for group in ("hard", "soft"):
        tp = fp = fn = 0
        for v in videos[group]:
            a, b, c = match(detect(v), v.truth)
            tp, fp, fn = tp + a, fp + b, fn + c
        p, r, f = prf(tp, fp, fn)
        cells[f"{group} P"], cells[f"{group} R"], cells[f"{group} F1"] = (
            f"{p:.2f}", f"{r:.2f}", f"{f:.2f}")
    cells["false bnd (no-cut)"] = " / ".join(str(len(detect(v))) for v in videos["negative"])
    tp = fn = 0
    for v in videos["partial"]:
        a, _, c = match(detect(v), v.truth)
        tp, fn = tp + a, fn + c
    cells["mograph cut R"] = f"{tp / max(tp + fn, 1):.2f}"
    return cells


def frames_of(video: Video) -> VideoFrames:
    """VideoFrames with detected shots; features double as embeddings."""
    starts = detect_shots(video.feats, video.ts)
    ids = shot_ids_from_starts(len(video.ts), starts)
    return VideoFrames(video.feats, video.ts, shot_ids=ids, features=video.feats)


def true_shot_ids(video: Video) -> np.ndarray:
    """Shot index of every sampled frame from the true boundary times."""
    return np.searchsorted(np.asarray(video.truth), video.ts, side="right").astype(np.int64)


def selection_cells(videos: list[Video]) -> dict[str, dict[str, str]]:
    """Mean shot recall and coverage at k = #true shots, per selection method."""
    out = {}
    for method in SELECTION_METHODS:
        recalls, covs = [], []
        for v in videos:
            frames, truth_ids = frames_of(v), true_shot_ids(v)
            k = int(truth_ids.max()) + 1
            sel = select_frames(method, frames, k)
            recalls.append(shot_recall(truth_ids, sel.indices))
            covs.append(coverage(v.feats, sel.indices))
        out[method] = {"shot R@k": f"{np.mean(recalls):.3f}", "coverage": f"{np.mean(covs):.3f}"}
    return out


def needle_cells(sources: dict[str, tuple[np.ndarray, np.ndarray]], trials: int, seed: int,
                 methods: list[str]) -> dict[str, str]:
    """Needle hit rate at k = 8 per method over ``trials`` random splices.

    ``sources`` maps a video name to (timestamps, features) sampled at 8 fps: hosts and
    needles use every other frame (4 fps), the query is a needle frame between two
    sampled ones. Hosts are the videos at least ``MIN_HOST_S`` long (a haystack worth the
    name); needles come from any other video.
    """
    rng = np.random.default_rng(seed)
    names = sorted(sources)
    hosts = [n for n in names if sources[n][0][-1] >= MIN_HOST_S]
    hits = {m: 0 for m in methods}
    for _ in range(trials):
        host = hosts[int(rng.integers(len(hosts)))]
        src = [n for n in names if n != host][int(rng.integers(len(names) - 1))]
        host_f = sources[host][1][::2]
        src_f = sources[src][1]
        length = int(round(rng.uniform(2.0, 4.0) * 4))
        start = 2 * int(rng.integers(0, (len(src_f) - 2 * length - 1) // 2))
        needle = src_f[start : start + 2 * length : 2]
        query = src_f[start + 2 * int(rng.integers(0, length - 1)) + 1]
        at = int(rng.integers(0, len(host_f) + 1))
        feats = np.concatenate([host_f[:at], needle, host_f[at:]])
        ts = np.arange(len(feats)) / 4.0
        inside = np.arange(at, at + length)
        ids = shot_ids_from_starts(len(ts), detect_shots(feats, ts))
        frames = VideoFrames(feats, ts, shot_ids=ids, features=feats, query=query)
        for m in methods:
            hits[m] += bool(np.isin(select_frames(m, frames, 8).indices, inside).any())
    return {m: f"{hits[m] / trials:.2f}" for m in methods}


def render(rows: list[tuple[str, dict[str, str]]], columns: list[str]) -> str:
    """A Markdown table; missing cells are dashes."""
    return markdown_table(["method", *columns], ([name, *(cells.get(c, "—") for c in columns)]
                                                 for name, cells in rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=os.path.join("/tmp", "framesift-quality"),
                    help="cache for the made soft-transition videos")
    ap.add_argument("--fps", type=float, default=4.0, help="sampling rate for shots")
    ap.add_argument("--trials", type=int, default=30, help="needle trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decoder", choices=["project", "pyav"], default="project",
                    help="operators.decode.decode_video, or sequential PyAV as a cross-check")
    ap.add_argument("--verbose", action="store_true", help="print found boundaries per video")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    t0 = time.time()

    def video(name: str, path: str, truth: list[float]) -> Video:
        ts, feats = load(path, args.fps, args.decoder)
        return Video(name, path, ts, feats, truth)

    real = lambda table: [video(n, str(VIDEOS_DIR / n), t) for n, t in table.items()]  # noqa: E731
    soft = soft_transition_set(args.workdir, seed=args.seed)
    videos = {
        "hard": real(HARD_CUT_TRUTH),
        "negative": real(NEGATIVE_TRUTH),
        "partial": real(PARTIAL_TRUTH),
        "soft": [video(os.path.basename(s.path), s.path, s.boundaries) for s in soft],
    }
    cache: dict[tuple[str, str], list[float]] = {}

    def detector(kind: str):
        def run(v: Video) -> list[float]:
            if (kind, v.path) not in cache:
                cache[(kind, v.path)] = (framesift_boundaries(v) if kind == "framesift"
                                         else pyscenedetect_boundaries(v.path, kind))
            return cache[(kind, v.path)]
        return run

    rows: list[tuple[str, dict[str, str]]] = [
        ("shots (framesift detect_shots)", boundary_cells(videos, detector("framesift"))),
        ("PySceneDetect ContentDetector", boundary_cells(videos, detector("content"))),
        ("PySceneDetect AdaptiveDetector", boundary_cells(videos, detector("adaptive"))),
    ]
    sel = selection_cells(videos["hard"] + videos["soft"])
    sources = {}
    for name in list(HARD_CUT_TRUTH) + list(NEGATIVE_TRUTH) + list(PARTIAL_TRUTH):
        sources[name] = load(str(VIDEOS_DIR / name), 2 * args.fps, args.decoder)
    needle = needle_cells(sources, args.trials, args.seed, SELECTION_METHODS + QUERY_ROWS)
    for m in SELECTION_METHODS + QUERY_ROWS:
        cells = dict(sel.get(m, {}))
        cells["needle hit@8"] = needle[m]
        rows.append((m, cells))
    columns = ["hard P", "hard R", "hard F1", "false bnd (no-cut)", "soft P", "soft R",
               "soft F1", "mograph cut R", "shot R@k", "coverage", "needle hit@8"]
    print(render(rows, columns))
    print(f"\n{len(videos['hard'])} hard-cut videos, no-cut videos "
          f"{' / '.join(v.name for v in videos['negative'])}, {len(videos['soft'])} soft-"
          f"transition videos ({sum(len(v.truth) for v in videos['soft'])} transitions), "
          f"{args.trials} needle trials; fps {args.fps:g}, decoder {args.decoder}, "
          f"tolerance {TOLERANCE_S} s; {time.time() - t0:.0f} s")
    if args.verbose:
        for group, vids in videos.items():
            for v in vids:
                print(f"{group:8s} {v.name:45s} truth {v.truth} framesift "
                      f"{[round(b, 2) for b in detector('framesift')(v)]} content "
                      f"{[round(b, 2) for b in detector('content')(v)]} adaptive "
                      f"{[round(b, 2) for b in detector('adaptive')(v)]}")


if __name__ == "__main__":
    main()
