"""CLIP weights: where a checkpoint comes from, checked before any video is read.

The registry half of the embedder, kept apart from building models (`operators.embed`), as
open_clip keeps `pretrained.py` apart from `factory.py`. In order of precedence:

- `--weights PATH` (or FRAMESIFT_CLIP_WEIGHTS): a local checkpoint file (.safetensors /
  .bin / .pt state_dict), a directory holding one, or an s3:// URI copied to a per-node
  cache, for air-gapped clusters;
- otherwise open_clip's own `pretrained` tag, from the local Hugging Face cache or
  downloaded by open_clip when the hub is reachable;
- `pretrained="random"`: random initialisation, only for tests and speed benchmarks (it is
  recorded as such in every output).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from operators import defaults
from operators.features import FEATURES_VERSION

log = logging.getLogger("framesift.embed")

WEIGHTS_ENV = defaults.WEIGHTS_ENV
RANDOM_TAGS = frozenset({"random", "none"})
_CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


class WeightsError(RuntimeError):
    """CLIP weights could not be found or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class EmbedderSpec:
    """Which embedder to build: `kind` is "clip" or "features". For CLIP, `checkpoint` is a
    resolved local file (None for random weights) and `weights` what the user named (a
    path or s3:// URI), resolved again on nodes that lack the driver's file."""

    kind: Literal["clip", "features"]
    model: str = defaults.MODEL
    pretrained: str | None = None
    checkpoint: str | None = None
    weights: str | None = None

    @property
    def name(self) -> str:
        """The embedder's name as recorded in outputs, e.g. 'clip:ViT-B-32/laion2b_s34b_b79k'."""
        if self.kind == "features":
            return FEATURES_VERSION
        if self.checkpoint and not self.pretrained:
            return f"clip:{self.model}/file:{Path(self.checkpoint).name}"
        return f"clip:{self.model}/{self.pretrained or 'random'}"

    @property
    def image_size(self) -> int:
        """The side of the square frames this embedder takes (decode scales to it)."""
        if self.kind == "features":
            return defaults.FEATURES_IMAGE_SIZE
        return model_image_size(self.model)

    def to_dict(self) -> dict:
        """Plain data (for a Serve deployment's arguments); `EmbedderSpec(**d)` rebuilds it."""
        return {"kind": self.kind, "model": self.model, "pretrained": self.pretrained,
                "checkpoint": self.checkpoint, "weights": self.weights}


def model_image_size(model: str) -> int:
    """The input image side of an open_clip model, from its config (no model is built)."""
    import open_clip

    cfg = open_clip.get_model_config(model) or {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _download_weights(uri: str) -> str:
    """Copy a checkpoint from object storage into a per-node cache (once); returns the path."""
    import hashlib

    from operators.storage import Storage

    cache = Path(os.environ.get(defaults.CACHE_ENV, Path.home() / ".cache" / "framesift")) / "weights"
    target = cache / hashlib.sha1(uri.encode()).hexdigest()[:16] / uri.rstrip("/").rsplit("/", 1)[-1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fs, path = Storage().fs_for(uri)
        try:
            if fs.isdir(path):
                raise WeightsError(f"--weights {uri!r}: name the checkpoint file, not a prefix")
            tmp = target.with_suffix(target.suffix + f".part{os.getpid()}")
            fs.get_file(path, str(tmp))
            os.replace(tmp, target)
        except WeightsError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"cannot download CLIP weights from {uri!r}: {exc}") from exc
    return str(target)


def _checkpoint_in(path: str) -> str:
    from operators.storage import is_remote

    if is_remote(path):
        return _download_weights(path)
    p = Path(path).expanduser()
    if p.is_file():
        return str(p)
    if p.is_dir():
        for name in _CHECKPOINT_NAMES:
            if (p / name).is_file():
                return str(p / name)
        found = sorted(
            [*p.glob("*.safetensors"), *p.glob("*.bin"), *p.glob("*.pt"), *p.glob("*.pth")],
            key=lambda x: x.suffix != ".safetensors",
        )
        if found:
            return str(found[0])
        raise WeightsError(f"no checkpoint (.safetensors/.bin/.pt) in directory {path!r}")
    raise WeightsError(f"weights path {path!r} does not exist")


def _hub_reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or url
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_cached(repo_id: str, filename: str | None) -> str | None:
    from huggingface_hub import hf_hub_download

    names = [filename] if filename else []
    names += [n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if n not in names]
    if filename and filename.endswith(".bin"):
        names.insert(0, filename[:-4] + ".safetensors")
    for name in names:
        try:
            return hf_hub_download(repo_id=repo_id, filename=name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the cache under this name
            continue
    return None


def resolve_checkpoint(model: str, pretrained: str | None, weights: str | None) -> str | None:
    """Find the local checkpoint file for a model: `weights` (file or directory), else the
    FRAMESIFT_CLIP_WEIGHTS variable, else open_clip's `pretrained` tag (local cache first,
    then a download when the hub answers). Returns None for random weights.

    Raises WeightsError naming the model and tag and how to point at a local file.
    """
    import open_clip

    if model not in open_clip.list_models():
        raise WeightsError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    weights = weights or os.environ.get(WEIGHTS_ENV)
    if weights:
        return _checkpoint_in(weights)
    if pretrained is None or pretrained.lower() in RANDOM_TAGS:
        return None
    hint = (
        f"Download the checkpoint on a machine with internet access and pass it with "
        f"--weights PATH (or set {WEIGHTS_ENV}=PATH)."
    )
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise WeightsError(f"open_clip has no pretrained tag {pretrained!r} for {model!r} (tags: {tags})")
    hub = cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/filename", or "org/repo/" for the default file
        repo_id, filename = os.path.split(hub)
        repo_id, filename = (repo_id, filename or None)
        cached = _hf_cached(repo_id, filename)
        if cached:
            return cached
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        if os.environ.get("HF_HUB_OFFLINE") in ("1", "true") or not _hub_reachable(endpoint):
            raise WeightsError(
                f"cannot load CLIP weights {model}/{pretrained}: not in the local Hugging Face "
                f"cache and {endpoint} is unreachable. {hint}"
            )
    try:
        target = open_clip.download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot download CLIP weights {model}/{pretrained}: {exc}. {hint}") from exc
    if not target:
        raise WeightsError(f"cannot download CLIP weights {model}/{pretrained}. {hint}")
    return target


def check_checkpoint(model: str, checkpoint: str) -> None:
    """Raise if `checkpoint` does not load into `model` with open_clip's own (strict)
    loading rules: names and shapes. The model is built on the meta device and the file is
    memory-mapped, so this reads the file's index, not its weights. A truncated or non-torch
    file fails here; a flipped byte inside a weight does not."""
    import warnings

    import open_clip
    import torch
    from open_clip.factory import load_checkpoint

    from operators.torch_patches import torch_load_mapped

    with torch.device("meta"):
        skeleton = open_clip.create_model(model, pretrained=None, device="meta")
    with warnings.catch_warnings(), torch_load_mapped():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
        load_checkpoint(skeleton, checkpoint)


def local_checkpoint(spec: EmbedderSpec) -> str | None:
    """The checkpoint path to load on this node: the driver's resolved path when this node
    has it, else resolved again here (the user's --weights file or s3:// URI, or the
    pretrained tag through this node's Hugging Face cache), so that workers on other
    machines than the driver find their own copy."""
    if spec.checkpoint is None or os.path.isfile(spec.checkpoint):
        return spec.checkpoint
    if spec.weights:
        return _checkpoint_in(spec.weights)
    return resolve_checkpoint(spec.model, spec.pretrained, None)


def resolve_embedder(
    requested: Literal["auto", "clip", "features"],
    model: str = defaults.MODEL,
    pretrained: str | None = defaults.PRETRAINED,
    weights: str | None = None,
    *,
    validate: bool = True,
) -> EmbedderSpec:
    """Decide which embedder a run uses, before any video is read.

    "clip" resolves (and with `validate`, test-loads) the weights and raises WeightsError if
    they cannot be had; "auto" does the same but falls back to the training-free features
    with a loud warning; "features" needs nothing. Returns the EmbedderSpec to build.
    """
    if requested == "features":
        return EmbedderSpec("features")
    if requested not in ("clip", "auto"):
        raise ValueError(f"unknown embedder {requested!r}; choose auto, clip or features")
    try:
        checkpoint = resolve_checkpoint(model, pretrained, weights)
        weights = weights or os.environ.get(WEIGHTS_ENV)
        tag = None if weights else pretrained
        if tag and tag.lower() in RANDOM_TAGS:
            tag = "random"
        spec = EmbedderSpec("clip", model, tag, checkpoint, weights)
        if validate and checkpoint:
            check_checkpoint(model, checkpoint)  # a bad or mismatched file fails here, not later
        return spec
    except WeightsError:
        if requested == "clip":
            raise
        log.warning(
            "\n%s\n  CLIP weights for %s/%s are not available: using the training-free "
            "'features' embedder instead.\n  Pass --weights PATH for CLIP, or --embedder "
            "features to silence this.\n%s",
            "!" * 78, model, pretrained, "!" * 78,
        )
        return EmbedderSpec("features")
    except Exception as exc:  # noqa: BLE001 - a corrupt or mismatched checkpoint file
        if requested == "clip":
            raise WeightsError(f"cannot load CLIP weights for {model}: {exc}") from exc
        log.warning("CLIP weights for %s failed to load (%s): using 'features'", model, exc)
        return EmbedderSpec("features")


