"""Clips (operators/clips.py) and WebDataset shards (operators/shards.py).

Unit tests cut synthetic and real videos with PyAV, without Ray: every clip decodes, has the
duration of its record within one frame, and its first frame is the source frame at its
start (PSNR against that frame decoded by PyAV, counted from the file's start as the job's
reader counts them); a cut on a keyframe copies, one beside it re-encodes. The job tests run
`--clips` and `--format webdataset` on real Ray and read the shards back with `webdataset`
and `ray.data.read_webdataset`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from operators.clips import (
    ClipError,
    ClipOptions,
    clip_windows,
    cut_clip,
    frame_span,
    h264_encoder,
    selection_windows,
)
from operators.shards import ShardPlanner, roll_shard, sample_key, video_piece, write_piece
from operators.storage import Storage
from operators.write import read_table
from tests.synthetic import shot_frames, write_video

# --------------------------------------------------------------------------- helpers


def source_frames(path: str | Path, first: int, last: int) -> dict[int, np.ndarray]:
    """Frames first..last of a video (RGB), counted from its first decoded frame (as the
    job's in-order reader counts them)."""
    out = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i > last:
                break
            if i >= first:
                out[i] = f.to_ndarray(format="rgb24")
    return out


def source_frame(path: str | Path, index: int) -> np.ndarray:
    """Frame `index` of a video (RGB)."""
    frames = source_frames(path, index, index)
    assert index in frames, f"{path} has no frame {index}"
    return frames[index]


def assert_starts_on(src: str | Path, index: int, first: np.ndarray) -> None:
    """`first` (a clip's first frame) is source frame `index`: PSNR > 30 dB against it, and
    closer to it than to either neighbour wherever the neighbour differs visibly (so an
    off-by-one cut fails even where consecutive frames are alike)."""
    frames = source_frames(src, max(0, index - 1), index + 1)
    ref = same_size(frames[index], first)
    assert psnr(ref, first) > 30
    for j in (index - 1, index + 1):
        if j in frames and psnr(frames[j], frames[index]) < 45:
            assert psnr(ref, first) > psnr(same_size(frames[j], first), first), f"closer to frame {j}"


def clip_info(data: bytes) -> tuple[list[np.ndarray], float, int]:
    """(decoded RGB frames, the video stream's frame rate, number of audio streams) of a clip."""
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return frames, float(c.streams.video[0].average_rate), len(c.streams.audio)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def same_size(ref: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """`ref` cropped (odd sizes lose a row / column) or resized (a transcode) to `frame`'s size."""
    h, w = frame.shape[:2]
    if ref.shape[0] - h in (0, 1) and ref.shape[1] - w in (0, 1):
        return ref[:h, :w]
    return np.asarray(Image.fromarray(ref).resize((w, h), Image.BILINEAR))


def check_clip(src: str | Path, data: bytes, rec, start_s: float, end_s: float) -> list[np.ndarray]:
    """The three promises of a clip: it decodes, lasts its window within one frame, and
    starts on the source frame shown at start_s."""
    frames, fps, _ = clip_info(data)
    assert len(frames) == rec.frames > 0
    assert abs(len(frames) / fps - (rec.end_s - rec.start_s)) <= 0.5 / fps + 1e-6
    assert rec.start_s == pytest.approx(start_s) and rec.end_s <= end_s + 1e-9
    assert_starts_on(src, rec.start_frame, frames[0])
    return frames


def keyframes(path: str | Path) -> list[int]:
    """Indices (display order) of the keyframes of an H.264 file without reordering issues."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = sorted((p.pts, p.is_keyframe) for p in c.demux(v) if p.pts is not None)
    return [i for i, (_, key) in enumerate(pts) if key]


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory) -> Path:
    """12 s of three synthetic shots in H.264 (B-frames, a keyframe every 25 frames), 25 fps."""
    path = tmp_path_factory.mktemp("clips") / "three_shots.mp4"
    frames = np.concatenate([shot_frames(100, 1), shot_frames(100, 2), shot_frames(100, 3)])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"g": "25", "keyint_min": "25", "sc_threshold": "0", "crf": "18"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


# --------------------------------------------------------------------------- unit


def test_h264_encoder_is_one_the_wheel_has():
    name = h264_encoder()
    assert name in ("libx264", "libopenh264")
    av.codec.Codec(name, "w")


def test_frame_span_takes_the_frame_shown_at_start_and_excludes_the_end():
    assert frame_span(1.0, 2.0, 25.0) == (25, 50)
    assert frame_span(1.01, 2.01, 25.0) == (25, 50)  # the frame shown at 1.01 s starts at 1.00 s
    assert frame_span(10.0, 12.5, 29.97) == (299, 374)  # 75 frames: 2.5 s within half a frame
    assert frame_span(0.0, 0.01, 25.0) == (0, 1)


def test_cut_on_a_keyframe_copies_and_beside_one_reencodes(h264_video):
    keys = keyframes(h264_video)
    assert keys[:3] == [0, 25, 50]
    data, rec = cut_clip(str(h264_video), 1.0, 2.0)  # frames 25..49: one whole GOP
    assert rec.mode == "copy" and rec.encoder is None and rec.codec == "h264" and rec.frames == 25
    check_clip(h264_video, data, rec, 1.0, 2.0)
    data, rec = cut_clip(str(h264_video), 1.04, 2.0)  # frame 26: not a keyframe
    assert rec.mode == "reencode" and rec.encoder == h264_encoder() and rec.frames == 24
    frames = check_clip(h264_video, data, rec, 1.04, 2.0)
    # the last frame is the source's frame 49 too
    assert psnr(source_frame(h264_video, 49), frames[-1]) > 30


def test_transcode_to_a_training_size_and_rate(h264_video):
    data, rec = cut_clip(str(h264_video), 4.0, 6.0, ClipOptions(height=60, fps=10))
    assert rec.mode == "reencode"  # on a keyframe, but a transcode was asked
    frames, fps, _ = clip_info(data)
    assert frames[0].shape == (60, 80, 3) and fps == pytest.approx(10)
    assert len(frames) == 20
    check_clip(h264_video, data, rec, 4.0, 6.0)


def test_clip_windows_never_cross_a_shot_and_split_long_shots():
    shots = [{"shot_index": 0, "start_s": 0.0, "end_s": 1.5},     # too short: dropped
             {"shot_index": 1, "start_s": 1.5, "end_s": 25.5},    # 24 s: 10 + 10 + 4
             {"shot_index": 2, "start_s": 25.5, "end_s": 36.5}]   # 11 s: 10, then 1 s dropped
    w = clip_windows(shots, 2.0, 10.0)
    assert w == [(1, 1.5, 11.5), (1, 11.5, 21.5), (1, 21.5, 25.5), (2, 25.5, 35.5)]
    for s, a, b in w:
        assert shots[s]["start_s"] <= a < b <= shots[s]["end_s"]
        assert 2.0 <= b - a <= 10.0


def test_selection_windows_clamp_method_clips_to_their_shot():
    shots = [{"shot_index": 0, "start_s": 0.0, "end_s": 5.0}, {"shot_index": 1, "start_s": 5.0, "end_s": 30.0}]
    frames = [
        {"timestamp_s": 4.0, "shot_index": 0, "clip": {"start_s": 3.0, "end_s": 4.5, "source": "method"}},
        {"timestamp_s": 23.0, "shot_index": 1, "clip": {"start_s": 5.0, "end_s": 30.0, "source": "shot"}},
        {"timestamp_s": 24.0, "shot_index": 1, "clip": {"start_s": 5.0, "end_s": 30.0, "source": "shot"}},
        {"timestamp_s": 7.0, "shot_index": 1, "clip": None},
    ]
    windows, of = selection_windows(shots, frames, max_s=10.0, step_s=1.0)
    assert windows == [(0, 3.0, 5.0), (1, 15.0, 25.0)]  # 4.5 + 1 clamped to the shot's end
    assert of == [0, 1, 1, None]


def test_real_videos_cut_frame_exact(shared_videos):
    cases = [
        ("cockatoo.mp4", 0.0, 2.0, ClipOptions(), "copy"),               # H.264, keyframe at 0
        ("wannaworktogether.mp4", 10.0, 12.5, ClipOptions(), "reencode"),  # H.264 + AAC, mid-GOP
        ("Megamind.avi", 4.13, 6.4, ClipOptions(), "reencode"),         # MPEG-4 packed B-frames
        ("cityCC0.mpg", 1.0, 3.0, ClipOptions(), "reencode"),           # MPEG-2, odd height
        ("big_buck_bunny_0_30.webm", 11.8, 14.0, ClipOptions(height=360), "reencode"),  # VP8
    ]
    for name, a, b, opts, mode in cases:
        data, rec = cut_clip(str(shared_videos / name), a, b, opts)
        assert rec.mode == mode, name
        check_clip(shared_videos / name, data, rec, a, b)


def test_audio_kept_as_aac_or_dropped(shared_videos):
    src = str(shared_videos / "wannaworktogether.mp4")
    data, rec = cut_clip(src, 20.0, 22.0)
    assert rec.audio
    with av.open(io.BytesIO(data)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        samples = sum(f.samples for f in c.decode(a))
        assert abs(samples / a.codec_context.sample_rate - 2.0) < 0.1
    data, rec = cut_clip(src, 20.0, 22.0, ClipOptions(audio=False))
    assert not rec.audio and clip_info(data)[2] == 0


def test_clip_errors_are_one_sentence(tmp_path, shared_videos):
    src = shared_videos / "cockatoo.mp4"
    with pytest.raises(ClipError, match="empty"):
        cut_clip(str(src), 3.0, 3.0)
    with pytest.raises(ClipError, match="past the video's last frame"):
        cut_clip(str(src), 100.0, 102.0)
    (tmp_path / "notes.mp4").write_text("not a video\n" * 100)
    with pytest.raises(ClipError, match="cannot be opened"):
        cut_clip(str(tmp_path / "notes.mp4"), 0.0, 1.0)
    data = src.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ClipError) as err:
        cut_clip(str(tmp_path / "truncated.mp4"), 10.0, 12.0)
    assert "\n" not in str(err.value)


def test_missing_keyframe_is_a_clip_error(tmp_path):
    """A stream whose only keyframe was cut away cannot start on an exact frame."""
    src = tmp_path / "src.mp4"
    write_video(src, np.concatenate([shot_frames(40, 5)]), fps=10, codec="libx264")
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.size]
        dst = tmp_path / "nokey.mp4"
        with av.open(str(dst), "w") as out:
            o = out.add_stream_from_template(v)
            for p in packets:
                if not p.is_keyframe:
                    p.stream = o
                    out.mux(p)
    with pytest.raises(ClipError, match="keyframe"):
        cut_clip(str(dst), 1.0, 2.0)


# --------------------------------------------------------------------------- shards (no Ray)


def test_pieces_roll_into_shards_readable_as_tar_and_resume(tmp_path):
    storage, out = Storage(), str(tmp_path)
    sizes = {}
    for v in range(5):
        vid = f"vid{v}"
        samples = [(sample_key(vid, "frame", t), {"jpg": bytes([v]) * 3000, "json": b"{}"}) for t in (0.5, 1.5)]
        sizes[vid] = write_piece(storage, out, vid, video_piece(samples))
    planner = ShardPlanner(storage, out, shard_bytes=2 * sizes["vid0"])
    batches = []
    for vid in ("vid0", "vid1", "vid2"):
        batches += planner.add(vid, sizes[vid])
    assert batches == [(0, ["vid0", "vid1"])]
    for number, vids in batches:
        roll_shard(storage, out, number, vids)
    # a new run: vid2..vid4 committed done earlier, vid0's piece is gone, vid4 not committed
    planner = ShardPlanner(storage, out, shard_bytes=10**9)
    assert planner.next_number == 1 and planner.rolled == {"vid0", "vid1"}
    assert planner.resume({"vid0", "vid1", "vid2", "vid3"}) == []
    batches = planner.flush()
    assert batches == [(1, ["vid2", "vid3"])]
    roll_shard(storage, out, *batches[0])
    names = []
    for shard in sorted((tmp_path / "shards").glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    assert names == [f"vid{v}_f{ms:09d}.{e}" for v in range(4) for ms in (500, 1500) for e in ("jpg", "json")]
    assert (tmp_path / "shards-work" / "pieces" / "vid4.tarpart").exists()  # waits for its commit
    assert not (tmp_path / "shards-work" / "pieces" / "vid2.tarpart").exists()


# --------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def clip_corpus(tmp_path_factory, shared_videos) -> Path:
    d = tmp_path_factory.mktemp("clip_corpus")
    for name in ("Megamind.avi", "cityCC0.mpg"):
        shutil.copy(shared_videos / name, d / name)
    return d


def _manifest(out: Path) -> list[dict]:
    return read_table(Storage(), str(out), "manifest").to_pylist()


@pytest.mark.integration
def test_job_clips_in_shots_mode(clip_corpus, tmp_path, ray_local):
    from jobs import curate

    out = tmp_path / "out"
    code = curate.main([str(clip_corpus), str(out), "--embedder", "features", "--fps", "4", "--k", "4",
                        "--clips", "--clip-mode", "shots", "--clip-min-s", "1", "--clip-max-s", "2.5"])
    assert code == 0
    rows = _manifest(out)
    shots = read_table(Storage(), str(out), "shots").to_pylist()
    clips = [r for r in rows if r["kind"] == "clip"]
    assert clips and {r["kind"] for r in rows} == {"frame", "clip"}
    src = {r["video_id"]: r["source_uri"] for r in rows}
    for c in clips:
        assert c["clip_error"] is None, c["clip_error"]
        shot = next(s for s in shots if s["video_id"] == c["video_id"] and s["shot_index"] == c["shot_index"])
        assert shot["start_s"] - 1e-9 <= c["clip_start_s"] < c["clip_end_s"] <= shot["end_s"] + 1e-9
        assert 1.0 - 1e-9 <= c["clip_end_s"] - c["clip_start_s"] <= 2.5 + 1e-9
        path = Path(c["clip_uri"])
        assert path.parent.name == c["video_id"] and path.name == (
            f"{round(c['clip_start_s'] * 1000):09d}-{round(c['clip_end_s'] * 1000):09d}.mp4")
        frames, fps, _ = clip_info(path.read_bytes())
        assert len(frames) == c["clip_frames"]
        assert abs(len(frames) / fps - (c["clip_end_s"] - c["clip_start_s"])) <= 1.0 / fps + 1e-6
        assert_starts_on(src[c["video_id"]], c["frame_index"], frames[0])
        assert c["clip_mode"] in ("copy", "reencode") and c["clip_codec"] == "h264"
    for f in (r for r in rows if r["kind"] == "frame" and r["clip_uri"]):
        assert f["clip_start_s"] <= f["timestamp_s"] < f["clip_end_s"]
    assert all(len(c["embedding"]) == len(rows[0]["embedding"]) for c in clips)


@pytest.mark.integration
def test_job_webdataset_shards(clip_corpus, tmp_path, ray_local):
    import ray.data
    import webdataset as wds

    from jobs import curate

    out = tmp_path / "out"
    argv = [str(clip_corpus), str(out), "--embedder", "features", "--fps", "2", "--k", "3", "--clips",
            "--format", "webdataset", "--shard-size-mb", "0.3"]
    assert curate.main(argv) == 0
    rows = _manifest(out)
    expected = {sample_key(r["video_id"], r["kind"], r["timestamp_s"] if r["kind"] == "frame" else r["clip_start_s"],
                           r["clip_end_s"]): r for r in rows if r["kind"] == "frame" or r["clip_uri"]}
    shards = sorted(str(p) for p in (out / "shards").glob("shard-*.tar"))
    assert len(shards) >= 2  # rolled by size
    report = json.loads((out / "report.json").read_text())
    assert report["shards"]["shards"] == len(shards) and not report["shards"]["errors"]
    seen = {}
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        seen[sample["__key__"]] = meta
        assert "embedding" not in meta
        if meta["kind"] == "frame":
            assert Image.open(io.BytesIO(sample["jpg"])).size[0] > 0
        else:
            frames, _, _ = clip_info(sample["mp4"])
            assert len(frames) == meta["clip_frames"]
    assert set(seen) == set(expected)
    for key, meta in seen.items():
        assert meta["video_id"] == expected[key]["video_id"] and meta["kind"] == expected[key]["kind"]
    ds = ray.data.read_webdataset(str(out / "shards"), decoder=None)
    assert ds.count() == len(expected)
    # a re-run skips everything and rolls nothing twice; the pieces are gone
    before = {p: Path(p).stat().st_mtime_ns for p in shards}
    assert curate.main(argv) == 0
    assert {str(p): p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.tar")} == before
    assert not list((out / "shards-work" / "pieces").glob("*.tarpart"))


@pytest.mark.integration
def test_job_unwritable_shard_piece_fails_the_video(clip_corpus, tmp_path, ray_local):
    from jobs import curate

    out = tmp_path / "out"
    (out / "shards-work").mkdir(parents=True)
    (out / "shards-work" / "pieces").write_text("a file where the pieces folder should be")
    code = curate.main([str(clip_corpus / "cityCC0.mpg"), str(out), "--embedder", "features", "--k", "2",
                        "--format", "webdataset"])
    assert code == 1
    (row,) = read_table(Storage(), str(out), "videos").to_pylist()
    assert row["status"] == "failed" and "pieces" in row["error"]
    assert not list((out / "shards").glob("*.tar")) if (out / "shards").exists() else True
    assert not (out / "shards-work" / "index").exists()
    # the failure is recorded (compacted into videos/'s shard at the end of the run)
    assert pq.read_table(out / "videos").column("video_id").to_pylist() == [row["video_id"]]


@pytest.mark.integration
def test_pieces_and_shards_on_s3(s3_endpoint, s3fs_client, tmp_path):
    """The same roll on a real S3 server (moto on loopback): a multipart-or-single PUT per
    shard, the index after it, the pieces deleted; a new planner sees the shard."""
    import webdataset as wds

    s3fs_client.mkdir("wds-bucket")
    storage, out = Storage(endpoint_url=s3_endpoint), "s3://wds-bucket/curated"
    for v in range(3):
        samples = [(sample_key(f"v{v}", "clip", 1.0, 2.5), {"mp4": b"x" * 5000, "json": b'{"kind": "clip"}'})]
        write_piece(storage, out, f"v{v}", video_piece(samples))
    planner = ShardPlanner(storage, out, shard_bytes=10**9)
    assert planner.resume({"v0", "v1", "v2"}) == []
    (batch,) = planner.flush()
    record = roll_shard(storage, out, *batch)
    assert record["videos"] == ["v0", "v1", "v2"]
    assert s3fs_client.ls("wds-bucket/curated/shards") == ["wds-bucket/curated/shards/shard-000000.tar"]
    assert not s3fs_client.exists("wds-bucket/curated/shards-work/pieces/v0.tarpart")
    assert ShardPlanner(storage, out, 1).rolled == {"v0", "v1", "v2"}
    local = tmp_path / "shard-000000.tar"
    s3fs_client.get_file("wds-bucket/curated/shards/shard-000000.tar", str(local))
    keys = [s["__key__"] for s in wds.WebDataset([str(local)], shardshuffle=False, empty_check=False)]
    assert keys == [f"v{v}_c000001000-000002500" for v in range(3)]


def test_clip_and_shard_options_are_checked():
    from jobs.config import ConfigError
    from jobs.curate import clip_settings, config_from_args

    cfg = config_from_args(["in", "out", "--clips", "--clip-transcode", "720p", "--clip-fps", "8", "--no-audio",
                            "--clip-mode", "shots", "--format", "webdataset", "--shard-size-mb", "64"])
    settings = clip_settings(cfg)
    assert settings.mode == "shots" and settings.options == ClipOptions(height=720, fps=8.0, audio=False)
    assert cfg.format == "webdataset" and cfg.shard_size_mb == 64.0
    assert clip_settings(config_from_args(["in", "out"])) is None
    for bad, word in ((["--clip-mode", "scenes"], "clip-mode"), (["--format", "tfrecord"], "format"),
                      (["--clip-transcode", "wide"], "HEIGHTp"), (["--clip-min-s", "5", "--clip-max-s", "2"], "min"),
                      (["--shard-size-mb", "0"], "shard-size-mb")):
        with pytest.raises(ConfigError, match=word):
            config_from_args(["in", "out", *bad])
