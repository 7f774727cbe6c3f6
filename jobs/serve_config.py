"""The typed configuration of the Ray Serve application (`jobs.serve`).

Every limit, the allowed URI prefixes, the auth token's environment variable, the
embedder and the deployments' Ray options (replicas, autoscaling, CPUs/GPUs) live here, so
that an operator changes them in configuration, never in code: a YAML file (`--config`, or
the file named by FRAMESIFT_SERVE_CONFIG), an inline YAML mapping in FRAMESIFT_SERVE_OPTIONS
(handy in a Serve config's `runtime_env.env_vars`), or a builder's `args:`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import yaml

from jobs.config import EMBEDDERS, ConfigError
from operators import defaults

CONFIG_ENV = defaults.SERVE_CONFIG_ENV
OPTIONS_ENV = defaults.SERVE_OPTIONS_ENV
MiB = 1024 * 1024

# Options a deployment may take from the configuration (Ray Serve's own names).
DEPLOYMENT_OPTIONS = frozenset(
    {
        "num_replicas", "autoscaling_config", "ray_actor_options", "max_ongoing_requests",
        "max_queued_requests", "health_check_period_s", "health_check_timeout_s",
        "graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s",
    }
)
# Schemes that are never read, whatever the allowed prefixes say (no server-side fetches
# of arbitrary network addresses).
FORBIDDEN_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "ssh", "data", "blob"})


def _ingress_defaults() -> dict:
    return {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4},
        "max_ongoing_requests": 16,
        "ray_actor_options": {"num_cpus": 1},
    }


def _embedding_defaults() -> dict:
    return {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
        "max_ongoing_requests": 128,
        # num_gpus "auto": one GPU per replica when the cluster has GPUs, else CPU.
        "ray_actor_options": {"num_cpus": 1, "num_gpus": "auto"},
    }


@dataclass
class ServeConfig:
    """Everything the service needs to know. Field `help` texts document each knob."""

    allowed_prefixes: list[str] = field(
        default_factory=list,
        metadata={"help": "URIs readable by POST /select: s3://bucket/prefix/ or local folders"},
    )
    s3_endpoint: str | None = field(default=None, metadata={"help": "S3-compatible endpoint URL"})
    embedder: str = field(default=defaults.EMBEDDER, metadata={"help": "auto, clip or features (as the job)"})
    model: str = field(default=defaults.MODEL, metadata={"help": "open_clip model name"})
    pretrained: str = field(
        default=defaults.PRETRAINED, metadata={"help": "open_clip tag ('random': tests only)"}
    )
    weights: str | None = field(default=None, metadata={"help": "local CLIP checkpoint file/dir"})
    default_method: str = field(default=defaults.METHOD, metadata={"help": "method when none is given"})
    default_k: int | str = field(default=defaults.K, metadata={"help": "k when none is given"})
    default_fps: float = field(default=defaults.FPS, metadata={"help": "fps when none is given"})
    max_upload_bytes: int = field(default=256 * MiB, metadata={"help": "largest video (413)"})
    max_query_image_bytes: int = field(default=8 * MiB, metadata={"help": "largest query image"})
    max_json_bytes: int = field(default=64 * 1024, metadata={"help": "largest JSON body (413)"})
    max_duration_s: float = field(default=1800.0, metadata={"help": "longest video (413)"})
    max_frames: int = field(default=256, metadata={"help": "most frames embedded per request"})
    too_many_frames: str = field(
        default="cap", metadata={"help": "cap: lower fps to max_frames; refuse: 413"}
    )
    request_timeout_s: float = field(default=120.0, metadata={"help": "per-request deadline (408)"})
    k_max: int = field(default=64, metadata={"help": "largest k accepted (422 above)"})
    fps_max: float = field(default=10.0, metadata={"help": "largest fps accepted (422 above)"})
    thumbnail_max_side: int = field(default=320, metadata={"help": "thumbnail long side (px)"})
    thumbnail_quality: int = field(default=85, metadata={"help": "thumbnail JPEG quality"})
    token_env: str = field(
        default=defaults.SERVE_TOKEN_ENV,
        metadata={"help": "env var holding a bearer token; when set, requests need it (401)"},
    )
    decode_workers: int = field(default=2, metadata={"help": "decode threads per ingress replica"})
    chunk_frames: int = field(
        default=defaults.CHUNK_FRAMES, metadata={"help": "sampled frames per chunk (as the job's)"}
    )
    cascade_ratio: float = field(
        default=defaults.CASCADE_RATIO, metadata={"help": "cascade: most embedded share (as the job's)"}
    )
    dense: bool = field(default=False, metadata={"help": "embed every sampled frame (as the job's --dense)"})
    shot_detector: str = field(
        default=defaults.SHOT_DETECTOR, metadata={"help": "features, transnetv2, auto or sampled (as the job's)"}
    )
    embed_chunk_frames: int = field(default=16, metadata={"help": "frames per embedding call"})
    embed_max_batch_frames: int = field(
        default=64, metadata={"help": "frames per model batch across requests (1 chunk = off)"}
    )
    embed_batch_wait_s: float = field(default=0.02, metadata={"help": "wait to fill a batch"})
    embed_num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    embed_dtype: str = field(
        default=defaults.EMBED_DTYPE, metadata={"help": "CLIP precision: auto, fp32, bf16 or fp16 (as the job)"}
    )
    ingress: dict = field(default_factory=_ingress_defaults, metadata={"help": "Serve options"})
    embedding: dict = field(default_factory=_embedding_defaults, metadata={"help": "Serve options"})

    def validate(self) -> ServeConfig:
        """Check every value; returns self, raises ConfigError naming the bad one."""
        from jobs.config import parse_k
        from operators.select import method_names

        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"embedder must be one of {', '.join(EMBEDDERS)}, got {self.embedder!r}")
        if self.default_method not in method_names():
            raise ConfigError(f"unknown default_method {self.default_method!r}")
        self.default_k = parse_k(self.default_k)
        for name in ("max_upload_bytes", "max_query_image_bytes", "max_json_bytes", "max_frames",
                     "k_max", "thumbnail_max_side", "decode_workers", "embed_chunk_frames", "chunk_frames"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in ("max_duration_s", "request_timeout_s", "fps_max", "default_fps"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be > 0")
        if self.shot_detector not in defaults.SHOT_DETECTORS:
            raise ConfigError(f"shot_detector must be one of {', '.join(defaults.SHOT_DETECTORS)}, "
                              f"got {self.shot_detector!r}")
        if not 0.0 < self.cascade_ratio <= 1.0:
            raise ConfigError("cascade_ratio must be in (0, 1]")
        if self.too_many_frames not in ("cap", "refuse"):
            raise ConfigError("too_many_frames must be 'cap' or 'refuse'")
        if not 1 <= self.thumbnail_quality <= 100:
            raise ConfigError("thumbnail_quality must be in 1..100")
        if self.embed_max_batch_frames < self.embed_chunk_frames:
            raise ConfigError("embed_max_batch_frames must be >= embed_chunk_frames")
        from operators.precision import EMBED_DTYPES

        if self.embed_dtype not in EMBED_DTYPES:
            raise ConfigError(f"embed_dtype must be one of {', '.join(EMBED_DTYPES)}, got {self.embed_dtype!r}")
        if self.embed_batch_wait_s < 0:
            raise ConfigError("embed_batch_wait_s must be >= 0")
        self.allowed_prefixes = [normalise_prefix(p) for p in self.allowed_prefixes]
        for name in ("ingress", "embedding"):
            unknown = set(getattr(self, name)) - DEPLOYMENT_OPTIONS
            if unknown:
                raise ConfigError(f"unknown {name} deployment option(s): {', '.join(sorted(unknown))}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServeConfig:
        """Build from a mapping; unknown keys are an error; 'ingress' / 'embedding' options
        are merged over the defaults (so a file can change only autoscaling, say)."""
        names = {f.name for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in (values or {}).items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise ConfigError(f"unknown service configuration key {key!r}")
            clean[k] = value
        cfg = cls(**{k: v for k, v in clean.items() if k not in ("ingress", "embedding")})
        for name in ("ingress", "embedding"):
            if name in clean:
                if not isinstance(clean[name], dict):
                    raise ConfigError(f"{name} must be a mapping of deployment options")
                setattr(cfg, name, merge(getattr(cfg, name), clean[name]))
        return cfg

    @classmethod
    def from_yaml(cls, path: str) -> ServeConfig:
        """Read a YAML mapping of the fields above."""
        return cls.from_dict(read_options(path))

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> ServeConfig:
        """Defaults, then the YAML file named by FRAMESIFT_SERVE_CONFIG, then the inline YAML
        of FRAMESIFT_SERVE_OPTIONS, then `overrides` (builder args, command line); validated."""
        path = os.environ.get(CONFIG_ENV)
        merged: dict[str, Any] = read_options(path) if path else {}
        inline = os.environ.get(OPTIONS_ENV)
        if inline:
            merged = merge(merged, _mapping(inline, OPTIONS_ENV))
        return cls.from_dict(merge(merged, dict(overrides or {}))).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (what travels to the replicas)."""
        return dataclasses.asdict(self)


def read_options(path: str) -> dict[str, Any]:
    """The raw mapping of service options in a YAML file (only the keys it sets)."""
    try:
        with open(path) as f:
            return _mapping(f.read(), f"service config {path!r}")
    except OSError as exc:
        raise ConfigError(f"cannot read service config {path!r}: {exc}") from exc


def _mapping(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of service options")
    return data


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: `override` wins; nested mappings are merged, not replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def normalise_prefix(prefix: str) -> str:
    """An allowed prefix in canonical form: 'scheme://bucket/key-prefix/' for object stores,
    an absolute real path ending in '/' for local folders. Refuses network schemes."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ConfigError(f"allowed prefix must be a non-empty string, got {prefix!r}")
    prefix = prefix.strip()
    if "://" in prefix and not prefix.startswith("file://"):
        parsed = urlparse(prefix)
        if parsed.scheme.lower() in FORBIDDEN_SCHEMES:
            raise ConfigError(f"allowed prefix {prefix!r}: {parsed.scheme}:// URIs are never fetched")
        if not parsed.netloc:
            raise ConfigError(f"allowed prefix {prefix!r} names no bucket")
        if ".." in parsed.path.split("/"):
            raise ConfigError(f"allowed prefix {prefix!r} contains '..'")
        key = parsed.path.strip("/")
        return f"{parsed.scheme.lower()}://{parsed.netloc}/" + (f"{key}/" if key else "")
    path = prefix[len("file://"):] if prefix.startswith("file://") else prefix
    if not os.path.isabs(path):
        raise ConfigError(f"allowed local prefix {prefix!r} must be an absolute path")
    return os.path.realpath(path).rstrip("/") + "/"
