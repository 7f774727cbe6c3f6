"""A corpus of broken and awkward inputs, each with the status and reason the job must record.

    cases = build_fault_corpus(folder)      # writes the files, returns one FaultCase each

The tests (tests/test_faults.py) and the scale benchmark share it. Every video is real: made
with PyAV (H.264 in MP4 unless the case is about something else), then damaged the way such
files are damaged in the wild: cut short, its index cut off, bytes overwritten in the middle
of the stream, timestamps that are not evenly spaced, a display matrix that turns it upright,
a file that changes between the listing and the decode. One case (`changes`) needs its
`after_listing` called once the job has listed its input and before it decodes.

Each frame has a red block in its top-left corner (`MARKER`), so that a test can tell an
upright frame from one on its side.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DONE, FAILED = "done", "failed"
MARKER = (255, 0, 0)  # top-left block of every frame, a twelfth of each side


@dataclass(frozen=True)
class FaultCase:
    """One input of the corpus: what it is (`name`), where (`path`), the status its videos/
    row must have, and for a failed one a regular expression its reason must match (searched,
    case-insensitive). `after_listing`, when set, must run between listing and decoding.
    `size` is the upright (width, height) of a done video's frames."""

    name: str
    path: Path
    status: str
    reason: str | None = None
    size: tuple[int, int] | None = None
    after_listing: Callable[[], None] | None = None


def scene(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """n RGB frames (n, height, width, 3) uint8: a smooth colour field with a square drifting
    across it (consecutive frames differ a little) and the red `MARKER` block top-left."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(4, 4, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    field = base[(yy * 4 // height), (xx * 4 // width)]
    frames = np.repeat(field[None], n, axis=0)
    side = max(2, min(width, height) // 6)
    for i in range(n):
        x0 = int((i / max(1, n - 1)) * max(0, width - side))
        frames[i, height // 2 : height // 2 + side, x0 : x0 + side] = (255, 255, 255)
    frames[:, : max(2, height // 12), : max(2, width // 12)] = MARKER
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 10, *, codec: str = "libx264",
                options: dict[str, str] | None = None, container_options: dict[str, str] | None = None,
                pts: list[int] | None = None, time_base: int | None = None, rotation: int = 0,
                damage: slice | None = None, pix_fmt: str = "yuv420p") -> Path:
    """Encode `frames` into `path` with PyAV. `pts` (in units of 1/`time_base` s) gives each
    frame its own time (variable frame rate); `rotation` sets the display matrix (degrees
    counter-clockwise, as FFmpeg reads it back); `damage` overwrites the payload of the
    packets in that range (in coded order, each packet's first bytes kept) with random
    bytes, as a bad disk or a broken transfer would."""
    from fractions import Fraction

    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = {"g": "10", "preset": "ultrafast", **(options or {})} if codec == "libx264" else (options or {})
        if time_base:
            stream.codec_context.time_base = Fraction(1, time_base)
            stream.time_base = Fraction(1, time_base)
        if rotation:
            stream.set_display_rotation(rotation)
        packets = []
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, time_base)
            packets += stream.encode(frame)
        packets += stream.encode()
        for j, packet in enumerate(packets):
            if damage is not None and damage.start <= j < damage.stop and packet.size > 16:
                raw = bytearray(bytes(packet))
                raw[8:] = rng.integers(0, 256, len(raw) - 8, dtype=np.uint8).tobytes()
                new = av.Packet(bytes(raw))
                new.pts, new.dts, new.time_base = packet.pts, packet.dts, packet.time_base
                new.is_keyframe = packet.is_keyframe
                new.stream = stream
                packet = new
            out.mux(packet)
    return path


def write_audio(path: Path, seconds: float = 1.0, rate: int = 44100) -> Path:
    """An MP4 holding one AAC stream of a sine tone and no video."""
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=rate)
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of an ISO-BMFF (MP4) file's top-level boxes, as far as they go."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        if size < 8:
            break
        boxes.append((kind, pos, size))
        pos += size
    return boxes


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(scene(1, 64, 48)[0]).save(buf, format="PNG")
    return buf.getvalue()


def build_fault_corpus(folder: str | Path) -> list[FaultCase]:
    """Write the fault corpus into `folder` (created) and return its cases, one per file.
    About 200 kB, 1.5 CPU-s to encode (18 cases)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    cases: list[FaultCase] = []

    def add(name: str, filename: str, status: str, reason: str | None = None, **kw) -> Path:
        cases.append(FaultCase(name, d / filename, status, reason, **kw))
        return d / filename

    w, h = 320, 240
    clip = scene(30, w, h, seed=1)  # 3 s at 10 fps
    write_video(add("good", "good.mp4", DONE, size=(w, h)), clip)

    add("zero-byte", "zero_bytes.mp4", FAILED, r"^empty file \(0 bytes\)$").write_bytes(b"")

    # the index first (as streaming services write them), then the file cut in half
    full = write_video(d / "_faststart.mp4", clip, container_options={"movflags": "faststart"}).read_bytes()
    add("truncated mid-file", "truncated.mp4", FAILED, r"truncated").write_bytes(full[: len(full) // 2])
    (d / "_faststart.mp4").unlink()

    # the index last (FFmpeg's and most cameras' default), and the file cut where it begins:
    # what a recording stopped by a crash or an interrupted upload leaves
    whole = (d / "good.mp4").read_bytes()
    moov = next(off for kind, off, _ in top_level_boxes(whole) if kind == "moov")
    add("moov atom missing", "no_moov.mp4", FAILED, r"moov").write_bytes(whole[:moov])

    add("text named .mp4", "notes.mp4", FAILED, r"not a video.*text").write_text(
        "These are meeting notes, saved with the wrong extension.\n" * 40)
    add("PNG named .mp4", "picture.mp4", FAILED, r"not a video.*PNG image").write_bytes(_png_bytes())
    write_audio(add("audio only", "audio_only.mp4", FAILED, r"no video stream.*audio"))

    # 6 s, a keyframe every 2 s: the payload of 6 packets in the middle of the second GOP
    # overwritten; the decoder rejects them and recovers at the next keyframe
    write_video(add("corrupt stretch in the middle", "corrupt_middle.mp4", DONE, size=(w, h)),
                scene(60, w, h, seed=2), options={"g": "20"}, damage=slice(24, 30))

    # variable frame rate: 25 fps, then 5 fps, then 25 fps again (ms timestamps)
    gaps = [40] * 25 + [200] * 10 + [40] * 25
    write_video(add("variable frame rate", "vfr.mp4", DONE, size=(w, h)), scene(len(gaps), w, h, seed=3),
                fps=25, pts=np.concatenate([[0], np.cumsum(gaps[:-1])]).astype(int).tolist(), time_base=1000)

    # a phone held upright: the sensor's landscape frames, and a display matrix turning them
    # 90 degrees into the portrait scene that was filmed
    portrait = scene(20, 180, 320, seed=4)
    write_video(add("rotated (display matrix)", "rotated.mp4", DONE, size=(180, 320)),
                np.ascontiguousarray(np.rot90(portrait, k=-1, axes=(1, 2))), rotation=90)

    write_video(add("4K", "uhd_4k.mp4", DONE, size=(3840, 2160)), scene(5, 3840, 2160, seed=5), fps=5)
    write_video(add("1 frame", "one_frame.mp4", DONE, size=(w, h)), scene(1, w, h, seed=6))
    write_video(add("under 1 s", "short.mp4", DONE, size=(w, h)), scene(4, w, h, seed=7))
    # odd sizes need a 4:4:4 stream (4:2:0 halves both sides)
    write_video(add("odd width", "odd_width.mp4", DONE, size=(321, 241)), scene(20, 321, 241, seed=8),
                options={"g": "10", "preset": "ultrafast", "profile": "high444"}, pix_fmt="yuv444p")
    shutil.copy(d / "good.mp4", add("non-ASCII and spaces in the name", "vidéo d'été 東京 1.mp4", DONE, size=(w, h)))
    write_video(add("identical files, first name", "twin_a.mp4", DONE, size=(w, h)), scene(20, w, h, seed=9))
    shutil.copy(d / "twin_a.mp4", add("identical files, second name", "twin b.mp4", DONE, size=(w, h)))

    changing = d / "changes.mp4"
    shutil.copy(d / "good.mp4", changing)

    def replace() -> None:  # another writer replaces the file once it has been listed
        tmp = d / "_changes.mp4"
        write_video(tmp, scene(50, w, h, seed=10))
        os.replace(tmp, changing)

    cases.append(FaultCase("changes between listing and decode", changing, FAILED,
                           r"changed since it was listed", after_listing=replace))
    return cases
