"""Precision / recall of the corpus dedup (--dedup-corpus) on real videos and their copies.

    python -m benchmarks.dedup [--threshold T] [--originals N]

Takes the shortest N real videos of ../shared/videos, makes four copies of each with PyAV
(`make_copies`: re-encoded with another codec at a low bitrate, resized to half, cropped by
a few pixels, trimmed by 1 s at both ends), curates the whole corpus (the originals, their
copies and the remaining real videos as distractors) with `--embedder features`, prints
the cosine similarity of the videos' mean embeddings for copy pairs and for distinct pairs,
then runs the dedup pass at the threshold and prints precision / recall of the video-level
drops (a true positive: a dropped copy, or a dropped original of a group, whose
duplicate_of is in its own group).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

from benchmarks.common import VIDEOS_DIR, markdown_table, videos_in

VARIANTS = ("reencode", "resize", "crop", "trim")
DEFAULT_THRESHOLD = 0.95


def _probe(src: Path) -> tuple[str, Fraction, float]:
    import av

    with av.open(str(src)) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        dur = float(c.duration / 1e6) if c.duration else float(s.duration * s.time_base)
        return s.codec_context.name, Fraction(rate).limit_denominator(1001), dur


def make_copy(src: Path, dest: Path, variant: str) -> Path:
    """Write one near-duplicate copy of `src` to `dest` (.mp4): `variant` is reencode
    (another codec than the source's, 250 kb/s), resize (half size), crop (6 px off each
    side) or trim (the first and last second cut). Returns dest."""
    import av

    from operators.clips import h264_encoder

    codec, rate, dur = _probe(src)
    out_codec = "mpeg4" if variant != "reencode" or codec != "mpeg4" else h264_encoder()
    fps = rate if float(rate) > 0 else Fraction(25)
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        s_in = inp.streams.video[0]
        w, h = s_in.codec_context.width, s_in.codec_context.height
        if variant == "resize":
            w, h = w // 2, h // 2
        elif variant == "crop":
            w, h = w - 12, h - 12
        w, h = w - w % 2, h - h % 2
        st = out.add_stream(out_codec, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.bit_rate = 250_000 if variant == "reencode" else 1_500_000
        n = 0
        for frame in inp.decode(video=0):
            t = float(frame.time or 0.0)
            if variant == "trim" and not 1.0 <= t <= dur - 1.0:
                continue
            if variant == "crop":
                arr = frame.to_ndarray(format="rgb24")[6 : 6 + h, 6 : 6 + w]
                f = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            else:
                f = frame.reformat(width=w, height=h, format="yuv420p")
            f.pts = n
            f.time_base = 1 / fps
            n += 1
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return dest


def _link(src: Path, dest: Path) -> None:
    """A hard link (the job reads symlinks' targets' versions apart), else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def make_corpus(folder: Path, originals: int, distractors: int | None = None) -> dict[str, str | None]:
    """Fill `folder` with the shortest `originals` real videos, four copies of each, and the
    next `distractors` real videos (None: all the others) without copies. Returns {file
    name: name of its original, None for an original or distractor}."""
    folder.mkdir(parents=True, exist_ok=True)
    real = sorted(videos_in(VIDEOS_DIR), key=lambda p: _probe(p)[2])
    if distractors is not None:
        real = real[: originals + distractors]
    truth: dict[str, str | None] = {}
    for i, src in enumerate(real):
        _link(src, folder / src.name)
        truth[src.name] = None
        if i < originals:
            for v in VARIANTS:
                name = f"{src.stem}__{v}.mp4"
                make_copy(src, folder / name, v)
                truth[name] = src.name
    return truth


def pair_similarities(output: str, truth: dict[str, str | None]) -> tuple[list[float], list[float]]:
    """Cosine of the mean frame embeddings of every (copy, its original) pair and of every
    pair of videos from different groups, read back from a curated OUTPUT."""
    import numpy as np

    from operators.dedup import manifest_owners, unit_rows, video_means
    from operators.storage import Storage
    from operators.write import read_table

    storage = Storage()
    vids = read_table(storage, output, "videos").to_pylist()
    name_of = {r["video_id"]: Path(r["source_uri"]).name for r in vids if r["status"] == "done"}
    paths, owner = manifest_owners(storage, output)
    means = video_means(storage, output, paths, owner, set(name_of))
    ids = sorted(means)
    m = unit_rows(np.stack([means[v] for v in ids]))
    sim = m @ m.T
    group = [truth[name_of[v]] or name_of[v] for v in ids]
    same, diff = [], []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            (same if group[i] == group[j] else diff).append(float(sim[i, j]))
    return same, diff


def score(drops: list[dict], uri_name: dict[str, str], truth: dict[str, str | None]) -> dict:
    """Precision / recall of video-level drops against the truth: each group of n videos
    should lose exactly n - 1, each to a member of its own group."""
    group = {n: truth[n] or n for n in truth}
    vd = [d for d in drops if d["level"] == "video"]
    tp = sum(group[uri_name[d["source_uri"]]] == group[uri_name[d["duplicate_uri"]]] for d in vd)
    expected = sum(1 for n in truth if truth[n] is not None)
    return {"dropped": len(vd), "true": tp, "expected": expected,
            "precision": tp / len(vd) if vd else 1.0, "recall": tp / expected if expected else 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine threshold")
    p.add_argument("--originals", type=int, default=3, help="real videos that get copies")
    return p.parse_args(argv)


SWEEP = (0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def sweep_row(output: str, truth: dict[str, str | None], threshold: float) -> list[str]:
    """The video level at another threshold, without editing OUTPUT: the pass's own search
    and keep order (operators.dedup.duplicates, keep_order) over the videos' mean
    embeddings. Cells: videos, copies, dropped, correct, precision, recall, rows (n/a)."""
    import numpy as np

    from operators.dedup import duplicates, keep_order, manifest_owners, video_means
    from operators.storage import Storage
    from operators.write import read_table

    storage = Storage()
    done = [r for r in read_table(storage, output, "videos").to_pylist() if r["status"] == "done"]
    uri = {r["video_id"]: r["source_uri"] for r in done}
    paths, owner = manifest_owners(storage, output)
    means = video_means(storage, output, paths, owner, set(uri))
    ordered = [v for v in keep_order(done) if v in means]
    pos = np.arange(len(ordered))
    found = duplicates(np.stack([means[v] for v in ordered]), pos, pos, threshold)
    drops = [{"level": "video", "source_uri": uri[ordered[i]], "duplicate_uri": uri[ordered[j]]}
             for i, (j, _) in found.items()]
    sc = score(drops, {u: Path(u).name for u in uri.values()}, truth)
    return [str(len(truth)), str(sc["expected"]), str(sc["dropped"]), str(sc["true"]),
            f"{sc['precision']:.3f}", f"{sc['recall']:.3f}", "n/a"]


def main(argv: list[str] | None = None) -> int:
    """Make the corpus, curate it, print similarities and the precision / recall table."""
    args = parse_args(argv)
    import pyarrow.parquet as pq

    from jobs import curate
    from operators.dedup import dedup_output
    from operators.storage import Storage

    with tempfile.TemporaryDirectory() as tmp:
        corpus, out = Path(tmp) / "in", str(Path(tmp) / "out")
        truth = make_corpus(corpus, args.originals)
        if curate.main([str(corpus), out, "--embedder", "features", "--fps", "1", "--k", "16"]) != 0:
            print("the curation run failed", file=sys.stderr)
            return 1
        same, diff = pair_similarities(out, truth)
        print(f"same-group pairs (copy-original, copy-copy): {len(same)}, min {min(same):.4f}, "
              f"mean {sum(same) / len(same):.4f}")
        print(f"distinct pairs: {len(diff)}, max {max(diff):.4f}, mean {sum(diff) / len(diff):.4f}")
        rows = [[f"{t:.3f}", *sweep_row(out, truth, t)] for t in SWEEP if t != args.threshold]
        res = dedup_output(Storage(), out, args.threshold)  # the pass itself, which edits OUTPUT
        drops = pq.read_table(res.drops_uri).to_pylist() if res.drops_uri else []
        uri_name = {d[k]: Path(d[k]).name for d in drops for k in ("source_uri", "duplicate_uri")}
        sc = score(drops, uri_name, truth)
        rows.append([f"{args.threshold:.3f} (the pass)", str(len(truth)), str(sc["expected"]), str(sc["dropped"]),
                     str(sc["true"]), f"{sc['precision']:.3f}", f"{sc['recall']:.3f}",
                     f"{res.dropped['frame']} frames, {res.dropped['clip']} clips"])
        rows.sort(key=lambda r: float(r[0].split()[0]))
        print(markdown_table(["threshold", "videos", "copies", "videos dropped", "correct", "precision",
                              "recall", "rows dropped"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
