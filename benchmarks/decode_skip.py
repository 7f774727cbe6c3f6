"""What skipping unneeded frames saves the in-order decoder.

    python -m benchmarks.decode_skip             # the six real videos, as they are and as x264 encodes
    python -m benchmarks.decode_skip --runs 5    # more runs of each setting (the fastest counts)

Sampling at 1 fps decodes every frame of a typical file: the sampled frames depend on the
frames before them back to a keyframe. Frames that no other frame refers to (most B-frames
of H.264 and HEVC, every B-frame of MPEG-2 and MPEG-4) need not be decoded unless they are
sampled; the in-order reader then tells FFmpeg to skip them, packet by packet
(``skip_frame=NONREF``). The benchmark decodes every
frame sampled at ``--fps`` at model size, one thread, through the job's own reader choice
(``operators.decode.open_reader``), with skipping off and on, alternating, and checks that both
return the same pixels. Two corpora: the real videos of ``../shared/videos`` as they are
(most were encoded without B-frames), and the same videos re-encoded with libx264 at its
defaults (preset medium, CRF 23: B-frames, as most web and camera H.264 has), which is what
a corpus of uploads looks like.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import VIDEOS_DIR, encode_h264, markdown_table, videos_in
from operators.decode import model_geometry, open_reader, probe_video, sample_indices, sampling_step

SIZE = 224


def encode_x264(src: str, dest: str) -> str:
    """Re-encode a video's frames with libx264 at its defaults (preset medium, CRF 23) into
    an MP4 at the source's frame rate, rounded. Returns `dest`."""
    import av

    with av.open(src) as inp:
        stream = inp.streams.video[0]
        rate = max(1, int(round(float(stream.average_rate or 25))))
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        frames = (f.to_ndarray(format="rgb24")[:height, :width] for f in inp.decode(stream))
        encode_h264(dest, frames, rate, width, height, {"preset": "medium", "crf": "23"})
    return dest


def b_frame_share(path: str) -> float:
    """Share of the file's pictures that are B-frames (decoded once to count)."""
    import av

    with av.open(path) as c:
        types = [int(f.pict_type) for f in c.decode(c.streams.video[0])]
    return float(np.mean([t == int(av.video.frame.PictureType.B) for t in types])) if types else 0.0


def decode_sampled(path: str, fps: float, skip: bool) -> tuple[np.ndarray, int, float]:
    """Decode every frame sampled at `fps` at model size, one thread, as the job's
    iter_chunks does, with skipping on or off. Returns (frames, pictures decoded, CPU s)."""
    t0 = time.process_time()
    info = probe_video(path)
    idx = sample_indices(info, fps)
    w, h = model_geometry(info, SIZE)
    reader = open_reader(path, w, h, 1, step=sampling_step(info, idx), wanted=idx if skip else None)
    try:
        frames = np.concatenate([reader.read(idx[s : s + 64]) for s in range(0, len(idx), 64)])
    finally:
        reader.close()
    return frames, int(getattr(reader, "decoded", -1)), time.process_time() - t0


def measure(paths: list[str], fps: float, runs: int) -> list[dict]:
    """Per file: B-frame share, pictures decoded and the fastest CPU time of `runs`
    alternating runs with skipping off and on; raises if the two give other pixels."""
    rows = []
    for path in paths:
        best = {False: (None, 0, float("inf")), True: (None, 0, float("inf"))}
        for _ in range(runs):
            for skip in (False, True):
                frames, decoded, cpu = decode_sampled(path, fps, skip)
                if cpu < best[skip][2]:
                    best[skip] = (frames, decoded, cpu)
        if not np.array_equal(best[False][0], best[True][0]):
            raise RuntimeError(f"{path}: skipping changed the decoded frames")
        rows.append({
            "file": os.path.basename(path), "b_share": b_frame_share(path),
            "sampled": len(best[False][0]), "decoded_off": best[False][1], "decoded_on": best[True][1],
            "cpu_off": best[False][2], "cpu_on": best[True][2],
        })
    return rows


def render(title: str, rows: list[dict]) -> str:
    """Markdown table of `measure`'s rows with a total line."""
    total = {
        "file": "**all**", "b_share": None, "sampled": sum(r["sampled"] for r in rows),
        "decoded_off": sum(r["decoded_off"] for r in rows), "decoded_on": sum(r["decoded_on"] for r in rows),
        "cpu_off": sum(r["cpu_off"] for r in rows), "cpu_on": sum(r["cpu_on"] for r in rows),
    }
    head = ["file", "B-frames", "frames sampled", "pictures decoded, off / on", "CPU s, off / on", "speed-up"]
    cells = [[r["file"], "" if r["b_share"] is None else f"{100 * r['b_share']:.0f}%", str(r["sampled"]),
              f"{r['decoded_off']} / {r['decoded_on']}", f"{r['cpu_off']:.3f} / {r['cpu_on']:.3f}",
              f"{r['cpu_off'] / r['cpu_on']:.2f}x"] for r in rows + [total]]
    return f"{title}\n\n" + markdown_table(head, cells)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(VIDEOS_DIR), help="folder of real videos")
    p.add_argument("--fps", type=float, default=1.0, help="sampling rate, as the job's --fps")
    p.add_argument("--runs", type=int, default=3, help="runs of each setting; the fastest counts")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both corpora and print their tables."""
    args = parse_args(argv)
    originals = [str(f) for f in videos_in(args.videos)]
    work = Path(tempfile.mkdtemp(prefix="framesift_decode_skip_"))
    try:
        t0 = time.perf_counter()
        encoded = [encode_x264(f, str(work / (Path(f).stem + "_x264.mp4"))) for f in originals]
        print(f"[decode_skip] re-encoded {len(encoded)} files with libx264 in {time.perf_counter() - t0:.0f} s")
        tables = [
            render("Real videos as they are:", measure(originals, args.fps, args.runs)),
            render("The same videos re-encoded with libx264 defaults (B-frames):",
                   measure(encoded, args.fps, args.runs)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nframesift in-order decoding at {args.fps} fps, model size {SIZE}, one thread; CPU s = fastest "
          f"of {args.runs} alternating runs; frames identical with skipping off and on (checked)\n")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
