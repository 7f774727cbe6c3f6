"""Cut clips of a local source video into .mp4 files with PyAV (libav), frame-exact.

    h264_encoder     the H.264 encoder this PyAV build has (libx264 or libopenh264)
    clip_windows     shots -> clip windows: short shots dropped, long ones split in pieces
    cut_clip         one window [start_s, end_s) of a video -> mp4 bytes + its ClipRecord

Times are on the job's clock: source frame i is shown over [i / fps, (i + 1) / fps) from the
video stream's first frame. A clip [start_s, end_s) starts on the frame shown at start_s
(floor(start_s * fps)) and holds round((end_s - start_s) * fps) frames, so it lasts its
window within half a frame. When that frame is a keyframe of an mp4-compatible stream, no transcode is asked and
no frame after the cut is reordered before it, the packets are copied as they are ("copy");
otherwise the frames are decoded from the keyframe before and re-encoded with H.264
("reencode"). Audio, when kept, is re-encoded to AAC and trimmed to the same window.

Unlike NeMo Curator's ClipTranscodingStage (ffmpeg subprocess, always re-encodes), this runs
in-process and copies where it can; the shot splitting follows its TransNetV2 stage's
"stride" mode (pieces of max_length_s, a last piece under min_length_s dropped).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

H264_ENCODERS = ("libx264", "libopenh264")
COPYABLE_CODECS = ("h264", "hevc", "av1")  # video codecs an mp4 holds as they are
EPS_FRAMES = 1e-3  # slack, in frames, when a time falls on a frame boundary
REORDER_LOOKAHEAD = 32  # packets read past the window's end to see if one still belongs to it
AAC_FRAME = 1024


class ClipError(RuntimeError):
    """A clip cannot be cut; the message is one sentence saying why."""


@dataclass(frozen=True)
class ClipOptions:
    """How clips are written: `height` re-encodes to HEIGHTp (width keeps the aspect, even),
    `fps` re-encodes at that frame rate (never above the source's), `audio` False drops the
    sound; `crf` / `preset` tune libx264 (openh264 gets a bit rate instead); `threads` is the
    encoder's and decoder's thread count (1: one core, what a finalize task asks Ray for)."""

    height: int | None = None
    fps: float | None = None
    audio: bool = True
    crf: int = 18
    preset: str = "veryfast"
    threads: int = 1


@dataclass(frozen=True)
class ClipRecord:
    """What was cut: the window (seconds, source clock), its frame count, "copy" or
    "reencode", the clip's video codec, the encoder used (None for a copy) and its size."""

    start_s: float
    end_s: float
    start_frame: int
    frames: int
    fps: float
    mode: str
    codec: str
    encoder: str | None
    audio: bool
    bytes: int


def h264_encoder() -> str:
    """The H.264 encoder of the installed PyAV wheel: libx264 when it has it, else libopenh264.
    Raises ClipError when it has neither."""
    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - absent from this build
            continue
        return name
    raise ClipError("this PyAV build has no H.264 encoder (neither libx264 nor libopenh264), so clips "
                    "cannot be re-encoded; install a PyAV wheel that bundles one")


def clip_windows(shots: list[dict], min_s: float, max_s: float | None) -> list[tuple[int, float, float]]:
    """(shot_index, start_s, end_s) of every clip the shots give: a shot shorter than `min_s`
    gives none, one longer than `max_s` is split into pieces of `max_s` from its start, its
    last piece dropped when shorter than `min_s` (NeMo Curator's "stride" mode). No window
    crosses a shot boundary."""
    out = []
    for shot in shots:
        a, b = float(shot["start_s"]), float(shot["end_s"])
        if b - a < min_s - 1e-9:
            continue
        step = max_s if max_s and max_s > 0 else b - a
        t = a
        while t < b - 1e-9:
            e = min(t + step, b)
            if e - t >= min_s - 1e-9:
                out.append((int(shot["shot_index"]), t, e))
            t = e
    return out


def frame_span(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """The source frames [first, stop) a window holds on the clip clock: from the frame shown
    at start_s, as many frames as the window lasts (rounded, at least one), so a clip's length
    is its window's within half a frame."""
    first = max(0, int(math.floor(start_s * fps + EPS_FRAMES)))
    return first, first + max(1, int(round((end_s - start_s) * fps)))


def cut_clip(path: str, start_s: float, end_s: float, options: ClipOptions | None = None,
             fps: float | None = None) -> tuple[bytes, ClipRecord]:
    """Cut [start_s, end_s) of the local video `path` into mp4 bytes, starting on the exact
    frame shown at start_s; `fps` is the clock's frame rate (the stream's average rate when
    None). Returns (bytes, record). Raises ClipError with the reason when the window is
    empty, lies past the end, or cannot be decoded (corrupt stretch, no keyframe before it)."""
    options = options or ClipOptions()
    if not end_s > start_s:
        raise ClipError(f"the clip window [{start_s:.3f}, {end_s:.3f}) s is empty")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise ClipError(f"the source cannot be opened: {_reason(exc)}") from exc
    try:
        return _cut(container, start_s, end_s, options, fps)
    except av.FFmpegError as exc:
        raise ClipError(f"the source cannot be decoded in [{start_s:.3f}, {end_s:.3f}) s: {_reason(exc)}") from exc
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


@dataclass
class _Window:
    """The demuxed packets a clip needs: video from the keyframe before the start, in decode
    order, and audio overlapping the window; frame indices are on the clip clock."""

    video: list
    index: list[int]
    audio: list
    ended: bool  # the stream ended before the window did


def _cut(container, start_s: float, end_s: float, options: ClipOptions, fps: float | None):
    if not container.streams.video:
        raise ClipError("the source has no video stream")
    vs = container.streams.video[0]
    rate = Fraction(fps).limit_denominator(100_000) if fps else (vs.average_rate or vs.guessed_rate)
    if not rate or rate <= 0:
        raise ClipError("the source's frame rate is unknown, so no frame can be located")
    rate = Fraction(rate)
    first, stop = frame_span(start_s, end_s, float(rate))
    tb = vs.time_base
    t0 = _first_pts(container, vs)
    a_stream = container.streams.audio[0] if options.audio and container.streams.audio else None
    win = _demux(container, vs, a_stream, first, stop, rate, tb, t0)
    if not win.video:
        raise ClipError(f"the clip starts at {start_s:.3f} s, past the video's last frame")
    stop = min(stop, max(win.index) + 1) if win.ended else stop
    if stop <= first:
        raise ClipError(f"the clip starts at {start_s:.3f} s, past the video's last frame")
    try:
        return _encode(vs, a_stream, win, first, stop, rate, options, start_s, end_s, t0, counting=None)
    except _Unreliable:
        # timestamps that cannot say which frame is which (AVI's packed B-frames): count the
        # frames from the start instead, as the job's in-order reader does
        container.seek(0, backward=True, any_frame=False, stream=vs)
        vs.codec_context.flush_buffers()
        return _encode(vs, a_stream, win, first, stop, rate, options, start_s, end_s, t0,
                       counting=container.demux(vs))


class _Unreliable(Exception):
    """Decoded frames' timestamps do not index the frames (not increasing one by one)."""


def _encode(vs, a_stream, win: _Window, first: int, stop: int, rate: Fraction, options: ClipOptions,
            start_s: float, end_s: float, t0: int, counting) -> tuple[bytes, ClipRecord]:
    """Write the clip: copy or re-encode the video (`counting`: the packets from the file's
    start, frames indexed by count), re-encode the audio. Returns (bytes, record)."""
    tb = vs.time_base
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    try:
        a_out = _audio_stream(out, a_stream) if a_stream is not None and win.audio else None
        if counting is None and _copyable(vs, win, first, stop, options):
            frames, codec, encoder, mode, out_rate = _copy_video(out, vs, win, first, stop)
        else:
            packets, ended = (win.video, win.ended) if counting is None else (counting, True)
            frames, codec, encoder, out_rate = _reencode_video(out, vs, packets, ended, first, stop, rate, t0,
                                                               options, counted=counting is not None)
            mode = "reencode"
        has_audio = False
        if a_out is not None:
            w0 = t0 * tb + Fraction(first) / rate
            w1 = t0 * tb + Fraction(first + frames * rate / out_rate) / rate
            has_audio = _reencode_audio(out, a_out, a_stream, win.audio, float(w0), float(w1))
    finally:
        out.close()
    data = buf.getvalue()
    expected = _out_count(stop - first, rate, out_rate)
    end = end_s if frames >= expected else min(end_s, float((first + frames * rate / out_rate) / rate))
    record = ClipRecord(
        start_s=float(start_s), end_s=float(end), start_frame=first, frames=frames, fps=float(out_rate),
        mode=mode, codec=codec, encoder=encoder, audio=has_audio, bytes=len(data),
    )
    return data, record


def _out_count(n_src: int, rate: Fraction, out_rate: Fraction) -> int:
    """Frames a clip of `n_src` source frames has at `out_rate`."""
    return n_src if out_rate == rate else max(1, math.ceil(n_src * out_rate / rate - EPS_FRAMES))


def _first_pts(container, vs) -> int:
    """The timestamp of the video's first decoded frame: frame 0 of the clip clock (a
    stream's start_time may name an earlier packet, e.g. AVI's packed B-frames)."""
    fallback = vs.start_time if vs.start_time is not None else 0
    container.seek(0, backward=True, any_frame=False, stream=vs)
    try:
        for packet in container.demux(vs):
            for frame in packet.decode():
                if frame.pts is not None:
                    return int(frame.pts)
                return fallback
    finally:
        vs.codec_context.flush_buffers()
    return fallback


def _index(pts: int | None, tb: Fraction, t0: int, rate: Fraction) -> int | None:
    return None if pts is None else int(round(float((pts - t0) * tb * rate)))


def _demux(container, vs, a_stream, first: int, stop: int, rate: Fraction, tb: Fraction, t0: int) -> _Window:
    """Seek to the keyframe at or before frame `first` (further back when the demuxer lands
    after it) and gather the window's packets. Raises ClipError without a keyframe there."""
    for back_s in (0.0, 1.0, 5.0, 30.0, None):
        if back_s is None or first == 0:
            container.seek(0, backward=True, any_frame=False, stream=vs)
        else:
            target = t0 + int(float((Fraction(first) / rate - Fraction(back_s)) / tb))
            container.seek(max(t0, target), backward=True, any_frame=False, stream=vs)
        win = _gather(container, vs, a_stream, first, stop, rate, tb, t0)
        if win is not None:
            return win
        if back_s is None or first == 0:
            break
    raise ClipError(f"no keyframe at or before frame {first} ({float(first / rate):.3f} s), "
                    "so the clip cannot start on its exact frame")


def _gather(container, vs, a_stream, first, stop, rate, tb, t0) -> _Window | None:
    streams = [vs] + ([a_stream] if a_stream is not None else [])
    video, index, audio = [], [], []
    started = False
    past = None  # packets read since a video packet at or after `stop`
    a_end = None if a_stream is None else float(t0 * tb + Fraction(stop) / rate)
    for packet in container.demux(*streams):
        if packet.size == 0 and packet.pts is None:
            continue  # a flush packet
        if packet.stream is vs:
            i = _index(packet.pts, tb, t0, rate)
            if not started:
                if not packet.is_keyframe:
                    continue
                if i is not None and i > first:
                    return None  # the seek landed after the start
                started = True
            video.append(packet)
            index.append(i if i is not None else -1)
            if i is not None and i >= stop:
                past = 0 if past is None else past
            if past is not None:
                past += 1
        elif started and packet.pts is not None:
            t = float(packet.pts * packet.stream.time_base)
            if t < a_end:
                audio.append(packet)
        audio_done = a_stream is None or (audio and float(audio[-1].pts * a_stream.time_base) >= a_end - 0.05)
        if past is not None and past > REORDER_LOOKAHEAD and audio_done:
            return _Window(video, index, audio, ended=False)
        if past is not None and past > 4 * REORDER_LOOKAHEAD:
            return _Window(video, index, audio, ended=False)
    return _Window(video, index, audio, ended=True) if started else None


def _copyable(vs, win: _Window, first: int, stop: int, options: ClipOptions) -> bool:
    """Whether the window's packets can be copied: the source codec fits mp4, no transcode is
    asked, the start frame is the keyframe, and the window's packets come first in decode
    order (none of them after one past the end, none before the start)."""
    if options.height or options.fps or vs.codec_context.name not in COPYABLE_CODECS:
        return False
    if not win.video[0].is_keyframe or win.index[0] != first:
        return False
    inside = [first <= i < stop for i in win.index]
    n = sum(inside)
    if n != stop - first or any(i < first for i in win.index):
        return False
    return all(inside[:n])  # the window's packets are exactly the first n


def _copy_video(out, vs, win: _Window, first: int, stop: int):
    o = out.add_stream_from_template(vs)
    packets = win.video[: stop - first]
    base = min(p.dts if p.dts is not None else p.pts for p in packets)
    for p in packets:
        p.pts = p.pts - base if p.pts is not None else None
        p.dts = p.dts - base if p.dts is not None else None
        p.stream = o
        out.mux(p)
    return len(packets), vs.codec_context.name, None, "copy", vs.average_rate or vs.guessed_rate


def _geometry(width: int, height: int, options: ClipOptions) -> tuple[int, int]:
    if options.height:
        h = int(options.height)
        w = int(round(width * h / height))
    else:
        w, h = width, height
    return max(2, w - w % 2), max(2, h - h % 2)


def _reencode_video(out, vs, packets, ended: bool, first: int, stop: int, rate: Fraction, t0: int,
                    options: ClipOptions, counted: bool):
    """Decode `packets` (from a keyframe at or before the start), keep frames [first, stop)
    (resampled to options.fps) and encode them with H.264. Frames are indexed by their
    timestamps, or by count with `counted` (the packets then start at the file's start).
    Raises _Unreliable when timestamps do not index the frames, ClipError when frames of the
    window cannot be decoded."""
    encoder = h264_encoder()
    out_rate = rate
    if options.fps and options.fps < float(rate):
        out_rate = Fraction(options.fps).limit_denominator(1001)
    n_out = _out_count(stop - first, rate, out_rate)
    wanted = [first + int(math.floor(j * float(rate / out_rate) + EPS_FRAMES)) for j in range(n_out)]
    w, h = _geometry(vs.codec_context.width, vs.codec_context.height, options)
    o = out.add_stream(encoder, rate=out_rate)
    o.width, o.height, o.pix_fmt = w, h, "yuv420p"
    o.codec_context.thread_count = max(1, int(options.threads))
    o.time_base = Fraction(1) / out_rate
    if encoder == "libx264":
        o.options = {"crf": str(options.crf), "preset": options.preset}
    else:
        o.bit_rate = int(w * h * float(out_rate) * 0.2)
    decoder = vs.codec_context
    tb = vs.time_base
    frames: dict = {}
    need = set(wanted)
    state = {"written": 0, "last": None}

    def take(frame) -> None:
        if counted:
            i = 0 if state["last"] is None else state["last"] + 1
        else:
            i = _index(frame.pts, tb, t0, rate)
            if i is None or (state["last"] is not None and i != state["last"] + 1):
                raise _Unreliable()
        state["last"] = i
        if i in need and i not in frames:
            frames[i] = _fit(frame, w, h, options.height is None)

    def emit() -> None:
        while state["written"] < n_out and wanted[state["written"]] in frames:
            j = state["written"]
            state["written"] = _encode_one(out, o, frames.pop(wanted[j]), j, wanted, frames)

    for packet in packets:
        if counted and packet.size == 0 and packet.pts is None:
            continue
        for frame in decoder.decode(packet):
            take(frame)
        emit()
        if state["written"] == n_out:
            break
    if state["written"] < n_out:
        for frame in decoder.decode(None):
            take(frame)
        emit()
    written = state["written"]
    if written < n_out and not ended:
        raise ClipError(f"frames {wanted[written]}..{stop - 1} of the clip cannot be decoded (a corrupt "
                        "stretch of the source)")
    if written == 0:
        raise ClipError(f"no frame of the clip from frame {first} could be decoded")
    for packet in o.encode(None):
        out.mux(packet)
    return written, "h264", encoder, out_rate


def _fit(frame, w: int, h: int, crop: bool):
    """The frame at w x h in yuv420p: scaled to a training size, or (same size) with the odd
    last row / column of an odd-sized source cropped off, so that its pixels stay the source's."""
    if crop and (frame.width, frame.height) != (w, h):
        rgb = frame.to_ndarray(format="rgb24")[:h, :w]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(width=w, height=h, format="yuv420p")


def _encode_one(out, o, frame, j: int, wanted: list[int], frames: dict) -> int:
    """Encode output frame j; a source frame shown twice (fps resampling never repeats, but a
    duplicate index would) stays available. Returns j + 1."""
    if j + 1 < len(wanted) and wanted[j + 1] == wanted[j]:
        frames[wanted[j]] = frame
    frame.pts, frame.time_base = j, 1 / o.average_rate  # not o.time_base: the muxer changes it
    frame.pict_type = av.video.frame.PictureType.NONE  # the source's frame types are not the clip's
    for packet in o.encode(frame):
        out.mux(packet)
    return j + 1


def _audio_stream(out, a_stream):
    """The clip's AAC stream, at the source's rate, mono or stereo (added before any packet
    is muxed, as mp4 writes every stream's header first)."""
    rate = a_stream.codec_context.sample_rate or 48000
    layout = a_stream.codec_context.layout.name if a_stream.codec_context.layout else "stereo"
    if a_stream.codec_context.channels > 2:
        layout = "stereo"
    o = out.add_stream("aac", rate=rate)
    o.layout = layout
    return o


def _reencode_audio(out, o, a_stream, packets: list, w0: float, w1: float) -> bool:
    """Decode the audio packets, keep the samples inside [w0, w1) (container seconds) and
    encode them to AAC on `o`. Returns whether any sample was written."""
    rate, layout = o.codec_context.sample_rate, o.codec_context.layout.name
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    fifo = av.AudioFifo()
    decoder = a_stream.codec_context
    for packet in packets:
        for frame in decoder.decode(packet):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            for r in resampler.resample(frame):
                _push(fifo, r, t, w0, w1, rate, layout)
                t += r.samples / rate
    count = 0
    while fifo.samples:
        frame = fifo.read(AAC_FRAME) if fifo.samples >= AAC_FRAME else fifo.read()
        frame.pts, frame.time_base = count, Fraction(1, rate)  # not o.time_base: the muxer changes it
        count += frame.samples
        for packet in o.encode(frame):
            out.mux(packet)
    for packet in o.encode(None):
        out.mux(packet)
    return count > 0


def _push(fifo, frame, t: float, w0: float, w1: float, rate: int, layout: str) -> None:
    a = max(0, int(round((w0 - t) * rate)))
    b = min(frame.samples, int(round((w1 - t) * rate)))
    if b <= a:
        return
    arr = frame.to_ndarray()[:, a:b]
    piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format="fltp", layout=layout)
    piece.sample_rate = rate
    piece.pts = None
    fifo.write(piece)


@dataclass(frozen=True)
class ClipSettings:
    """Which clips a run cuts: `mode` "selected" (the windows of the selected frames: the
    method's clips, else the piece of the frame's shot, at most `max_s` long) or "shots"
    (every shot of at least `min_s`, long ones split into `max_s` pieces), and how."""

    mode: str = "selected"
    min_s: float = 2.0
    max_s: float | None = 10.0
    options: ClipOptions = ClipOptions()


CLIP_MODES = ("selected", "shots")


def selection_windows(shots: list[dict], frames: list[dict], max_s: float | None,
                      step_s: float) -> tuple[list[tuple[int, float, float]], list[int | None]]:
    """The clip windows of a selection and, per selected frame, the index of its window.

    `frames` are `VideoSelection.frames()` dicts (timestamp_s, shot_index, clip). A method's
    clip [first, last sampled frame] becomes [first, last + `step_s`), both ends clamped to
    the shot holding its first frame; a frame without a method clip gets the `max_s` piece of
    its shot that holds it (pieces from the shot's start, as `clip_windows` cuts them); a
    frame of a clip method outside every clip gets none. Windows are distinct, in time order.
    """
    by_index = {int(s["shot_index"]): s for s in shots}
    keyed: dict[tuple[float, float], tuple[int, float, float]] = {}
    of: list[tuple[float, float] | None] = []
    for f in frames:
        shot = by_index.get(int(f["shot_index"]))
        clip = f.get("clip")
        if shot is None or clip is None:
            of.append(None)
            continue
        a, b = float(shot["start_s"]), float(shot["end_s"])
        if clip.get("source") == "method":
            start = max(a, float(clip["start_s"]))
            end = min(b, float(clip["end_s"]) + step_s)
        else:
            length = max_s if max_s and max_s > 0 else b - a
            k = int(max(0.0, float(f["timestamp_s"]) - a) // length)
            start, end = a + k * length, min(b, a + (k + 1) * length)
        if end <= start:
            of.append(None)
            continue
        key = (round(start, 6), round(end, 6))
        keyed.setdefault(key, (int(shot["shot_index"]), start, end))
        of.append(key)
    order = sorted(keyed)
    pos = {k: i for i, k in enumerate(order)}
    return [keyed[k] for k in order], [None if k is None else pos[k] for k in of]


def window_of(windows: list[tuple[int, float, float]], shot_index: int, t: float) -> int | None:
    """The index of the window of shot `shot_index` that holds time `t`, or None."""
    for i, (s, a, b) in enumerate(windows):
        if s == shot_index and a - 1e-9 <= t < b:
            return i
    return None
