"""The typed configuration shared by the batch job and the service.

One dataclass, filled from defaults, then a YAML file (`--config`), then command-line
options, in that order; `validate()` turns every bad value into one clear message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from operators import defaults

EMBEDDERS = ("auto", "clip", "features")
IMAGE_FORMATS = ("jpeg", "webp")
OUTPUT_FORMATS = ("files", "webdataset")
CLIP_MODES = ("selected", "shots")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it."""


@dataclass
class CurateConfig:
    """Everything a curation run needs to know. Field docs double as `--help` text."""

    input: str = ""
    output: str = ""
    fps: float = field(default=defaults.FPS, metadata={"help": "frames sampled per second of video"})
    k: int | str = field(
        default=defaults.K, metadata={"help": "frames kept per video, or 'auto' for an adaptive budget"}
    )
    method: str = field(default=defaults.METHOD, metadata={"help": "selection method (see --list-methods)"})
    embedder: str = field(
        default=defaults.EMBEDDER,
        metadata={
            "help": "clip (open_clip; fails without weights), features (training-free, "
            "fast) or auto (clip when its weights load, features otherwise, with a warning)"
        },
    )
    model: str = field(default=defaults.MODEL, metadata={"help": "open_clip model name"})
    pretrained: str = field(
        default=defaults.PRETRAINED,
        metadata={"help": "open_clip pretrained tag ('random' = random init, tests only)"},
    )
    weights: str | None = field(
        default=None, metadata={"help": "local CLIP checkpoint file or directory (air-gapped)"}
    )
    query: str | None = field(default=None, metadata={"help": "text query for query methods (CLIP)"})
    query_image: str | None = field(
        default=None, metadata={"help": "image file whose embedding is the query"}
    )
    image_format: str = field(default="jpeg", metadata={"help": "jpeg or webp for frames"})
    image_quality: int = field(default=90, metadata={"help": "JPEG/WebP quality 1-100"})
    max_side: int | None = field(
        default=None, metadata={"help": "scale written frames so the long side <= this"}
    )
    limit: int | None = field(default=None, metadata={"help": "process at most N input videos"})
    seed: int = field(default=0, metadata={"help": "seed for randomised methods"})
    dedup_threshold: float | None = field(
        default=None, metadata={"help": "drop selected frames more similar than this (cosine)"}
    )
    dedup_corpus: float | None = field(
        default=None,
        metadata={"help": "after the run, drop near-duplicate videos (mean embedding) and then frames "
                  "and clips across videos at least this similar (cosine), keeping one of each "
                  "group; drops are listed in OUTPUT/dedup/ (default off; 0.95 suits the "
                  "features embedder, see docs/decisions.md)"},
    )
    chunk_frames: int = field(default=defaults.CHUNK_FRAMES, metadata={"help": "sampled frames per chunk row"})
    driver_niceness: int = field(
        default=10,
        metadata={"help": "CPU niceness this process takes once Ray is up (Ray runs its workers "
                  "at 15; a driver at 0 preempts them on every wake-up of its scheduling loop); "
                  "0 leaves it as it is"},
    )
    keep_images_max_frames: int = field(
        default=256,
        metadata={"help": "videos of at most this many sampled frames have each one's image "
                  "encoded during decode and kept on the node, so finalize writes the selected "
                  "ones without reading the video again (0 = always read again; JPEG output "
                  "only, as WebP encoding costs more than the second read)"},
    )
    max_frames_per_video: int | None = field(
        default=None, metadata={"help": "cap on sampled frames per video (lowers fps)"}
    )
    dense: bool = field(
        default=False,
        metadata={"help": "embed every sampled frame (default: the cascade embeds one frame "
                  "per group of near-duplicates found by the cheap features)"},
    )
    cascade_ratio: float = field(
        default=defaults.CASCADE_RATIO,
        metadata={"help": "cascade: at most this share of sampled frames is embedded, or k per "
                  "video if more (the distinct candidates the selection needs)"},
    )
    embed_batch_size: int = field(default=32, metadata={"help": "frames per model batch"})
    embed_concurrency: tuple[int, int] | int | None = field(
        default=None, metadata={"help": "embedding actors: N or MIN,MAX (default: by resources); the "
                                "pool starts at MIN, so N,N starts all N at once (GPU clusters: "
                                "no minutes lost adding one actor at a time)"}
    )
    embed_dtype: str = field(
        default=defaults.EMBED_DTYPE,
        metadata={"help": "precision of the CLIP towers: auto (fp16 on GPU; bf16 on CPUs with "
                  "native bf16, about 3.5x fp32 there; else fp32), fp32, bf16 or fp16 (GPU only)"},
    )
    shot_detector: str = field(
        default=defaults.SHOT_DETECTOR,
        metadata={"help": "shot boundaries from every source frame, independent of --fps: features "
                  "(training-free, on the decoder's thumbnails), transnetv2 (the learned model, "
                  "its own actor stage, a GPU per actor when there are GPUs), auto (features), "
                  "or sampled (the cheapest: only the --fps samples, so cuts between them can be "
                  "missed)"},
    )
    embed_device: str = field(
        default="auto",
        metadata={"help": "auto (GPU actors when the cluster has GPUs at start), gpu (always one "
                  "GPU per actor: lets the autoscaler add GPU nodes), or cpu"},
    )
    s3_endpoint: str | None = field(
        default=None, metadata={"help": "endpoint URL of an S3-compatible store"}
    )
    all_files: bool = field(
        default=False, metadata={"help": "list every file under INPUT, not only video extensions"}
    )
    retry_failed: bool = field(
        default=False, metadata={"help": "process again the videos a previous run marked failed"}
    )
    segment_s: float = field(
        default=defaults.SEGMENT_S,
        metadata={"help": "a video at least twice this long (seconds) is decoded in spans this long, "
                  "each its own task, all at once (indexed containers: MP4, MKV, WebM, MOV; "
                  "constant or variable frame rate); the outputs are those of one decode; 0 = never split"},
    )
    max_inflight_videos: int = field(
        default=8, metadata={"help": "videos being selected + written at once"}
    )
    assemblers: int = field(
        default=0,
        metadata={"help": "actors on the driver's node that gather each video's chunk rows, videos "
                  "partitioned by id (0 = one per 64 CPUs of the cluster, at least 1; a single one runs in the driver)"},
    )
    clips: bool = field(
        default=False,
        metadata={"help": "cut every clip window into OUTPUT/clips/<video_id>/<start_ms>-<end_ms>.mp4 "
                  "(frame-exact: stream copy when the cut is on a keyframe, H.264 re-encode otherwise); "
                  "each clip is a manifest row of kind 'clip'"},
    )
    clip_mode: str = field(
        default="selected",
        metadata={"help": "selected (the windows of the selected frames: the method's clips, else "
                  "the piece of the frame's shot) or shots (every shot of at least --clip-min-s, "
                  "long shots split into --clip-max-s pieces, as NeMo Curator splits them)"},
    )
    clip_min_s: float = field(default=2.0, metadata={"help": "--clip-mode shots: shortest clip, seconds"})
    clip_max_s: float = field(
        default=10.0, metadata={"help": "longest clip, seconds: longer shots are split into pieces"}
    )
    clip_transcode: str | None = field(
        default=None, metadata={"help": "re-encode every clip to this training height, e.g. 720p"}
    )
    clip_fps: float | None = field(
        default=None, metadata={"help": "re-encode every clip at this frame rate (never above the source's)"}
    )
    no_audio: bool = field(default=False, metadata={"help": "drop the sound from clips (kept, as AAC, by default)"})
    format: str = field(
        default="files",
        metadata={"help": "files (frames/, clips/ and Parquet tables) or webdataset (the same, plus "
                  "OUTPUT/shards/shard-*.tar: one sample per selected frame or clip with its .json)"},
    )
    shard_size_mb: float = field(
        default=512.0, metadata={"help": "--format webdataset: shards roll over at about this many MB"}
    )
    compact_every: int = field(
        default=1000,
        metadata={"help": "gather the tables' per-video files into shards every N committed "
                  "videos and at the end of the run (0 = never; framesift-compact OUTPUT later)"},
    )

    def validate(self) -> CurateConfig:
        """Check every value; returns self, raises ConfigError naming the bad one."""
        if not self.input:
            raise ConfigError("INPUT is required")
        if not self.output:
            raise ConfigError("OUTPUT is required")
        if not (self.fps > 0):
            raise ConfigError(f"--fps must be > 0, got {self.fps}")
        self.k = parse_k(self.k)
        if self.shot_detector not in defaults.SHOT_DETECTORS:
            raise ConfigError(f"--shot-detector must be one of {', '.join(defaults.SHOT_DETECTORS)}, "
                              f"got {self.shot_detector!r}")
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"--embedder must be one of {', '.join(EMBEDDERS)}, got {self.embedder!r}")
        if self.image_format == "jpg":
            self.image_format = "jpeg"
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--image-format must be jpeg or webp, got {self.image_format!r}")
        if not 1 <= self.image_quality <= 100:
            raise ConfigError("--image-quality must be in 1..100")
        if self.keep_images_max_frames < 0:
            raise ConfigError(f"--keep-images-max-frames must be >= 0, got {self.keep_images_max_frames}")
        if not 0 <= self.driver_niceness <= 19:
            raise ConfigError(f"--driver-niceness must be in 0..19, got {self.driver_niceness}")
        if self.chunk_frames < 1 or self.embed_batch_size < 1 or self.max_inflight_videos < 1:
            raise ConfigError("--chunk-frames, --embed-batch-size, --max-inflight-videos must be >= 1")
        if self.assemblers < 0:
            raise ConfigError(f"--assemblers must be >= 0 (0: one per 64 cluster CPUs), got {self.assemblers}")
        if not 0.0 < self.cascade_ratio <= 1.0:
            raise ConfigError("--cascade-ratio must be in (0, 1]")
        if self.segment_s < 0:
            raise ConfigError(f"--segment-s must be >= 0, got {self.segment_s}")
        if self.compact_every < 0:
            raise ConfigError(f"--compact-every must be >= 0, got {self.compact_every}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.dedup_threshold is not None and not -1.0 <= self.dedup_threshold <= 1.0:
            raise ConfigError("--dedup-threshold is a cosine similarity in [-1, 1]")
        if self.dedup_corpus is not None and not -1.0 <= self.dedup_corpus <= 1.0:
            raise ConfigError("--dedup-corpus is a cosine similarity in [-1, 1]")
        self.embed_concurrency = parse_concurrency(self.embed_concurrency)
        self._validate_clips()
        from operators.precision import EMBED_DTYPES

        if self.embed_dtype not in EMBED_DTYPES:
            raise ConfigError(f"--embed-dtype must be one of {', '.join(EMBED_DTYPES)}, got {self.embed_dtype!r}")
        if self.embed_dtype == "fp16" and self.embed_device == "cpu":
            raise ConfigError("--embed-dtype fp16 needs GPU embedding; use bf16 or fp32 with --embed-device cpu")
        if self.embed_device not in ("auto", "gpu", "cpu"):
            raise ConfigError(f"--embed-device must be auto, gpu or cpu, got {self.embed_device!r}")
        from operators.select import QUERY_METHODS, method_names

        if self.method not in method_names():
            raise ConfigError(f"unknown --method {self.method!r}; choose one of {', '.join(method_names())}")
        if self.method in QUERY_METHODS and not (self.query or self.query_image):
            raise ConfigError(f"--method {self.method} needs --query TEXT or --query-image PATH")
        if self.query and self.embedder == "features":
            raise ConfigError("--query (text) needs --embedder clip; use --query-image with features")
        return self

    def _validate_clips(self) -> None:
        if self.clip_mode not in CLIP_MODES:
            raise ConfigError(f"--clip-mode must be selected or shots, got {self.clip_mode!r}")
        if not self.clip_min_s >= 0 or not self.clip_max_s > 0 or self.clip_min_s > self.clip_max_s:
            raise ConfigError("--clip-min-s and --clip-max-s must satisfy 0 <= min <= max, max > 0")
        if self.clip_transcode is not None:
            self.clip_transcode_height()
        if self.clip_fps is not None and not self.clip_fps > 0:
            raise ConfigError(f"--clip-fps must be > 0, got {self.clip_fps}")
        if self.format not in OUTPUT_FORMATS:
            raise ConfigError(f"--format must be files or webdataset, got {self.format!r}")
        if not self.shard_size_mb > 0:
            raise ConfigError(f"--shard-size-mb must be > 0, got {self.shard_size_mb}")

    def clip_transcode_height(self) -> int | None:
        """The height of --clip-transcode HEIGHTp (720p -> 720), None when not set."""
        if self.clip_transcode is None:
            return None
        text = str(self.clip_transcode).strip().lower().removesuffix("p")
        if not text.isdigit() or not 16 <= int(text) <= 4320:
            raise ConfigError(f"--clip-transcode must be HEIGHTp (16p..4320p), e.g. 720p; got {self.clip_transcode!r}")
        return int(text)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CurateConfig:
        """Build from a mapping (YAML file); unknown keys are an error, '-' and '_' both work."""
        names = {f.name for f in dataclasses.fields(cls)}
        clean = {}
        for key, value in values.items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise ConfigError(f"unknown configuration key {key!r}")
            clean[k] = value
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str) -> CurateConfig:
        """Read a YAML file of options (same names as the command-line flags)."""
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read --config {path!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path!r} must hold a mapping of options")
        return cls.from_dict(data)


def parse_k(k: int | str) -> int | str:
    """'auto' or a positive integer (also from a string); raises ConfigError otherwise."""
    if isinstance(k, str):
        if k.strip().lower() == "auto":
            return "auto"
        try:
            k = int(k)
        except ValueError:
            raise ConfigError(f"--k must be a positive integer or 'auto', got {k!r}") from None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"--k must be a positive integer or 'auto', got {k!r}")
    return k


def parse_concurrency(value: Any) -> tuple[int, int] | int | None:
    """'4', 4, '1,4', [1, 4] -> 4 or (1, 4); None stays None."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        parts = [p for p in value.replace(":", ",").split(",") if p.strip()]
    else:
        parts = list(value)
    try:
        nums = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"--embed-concurrency must be N or MIN,MAX, got {value!r}") from None
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2 and 1 <= nums[0] <= nums[1]:
        return (nums[0], nums[1])
    raise ConfigError(f"--embed-concurrency must be N or MIN,MAX with MIN <= MAX, got {value!r}")
