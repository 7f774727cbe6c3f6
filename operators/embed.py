"""Frame and text embedders: open_clip image/text towers, and the training-free features.

Weights are resolved once, up front (`resolve_embedder`), so that a job or a service fails
before it reads any video when the weights it was asked for cannot be had:

- `--weights PATH` (or the FRAMESIFT_CLIP_WEIGHTS environment variable): a local
  checkpoint file (.safetensors / .bin / .pt state_dict) or a directory holding one, for
  air-gapped clusters;
- otherwise open_clip's own `pretrained` tag, taken from the local Hugging Face cache or
  downloaded by open_clip when the hub is reachable;
- `pretrained="random"`: random initialisation, only for tests and speed benchmarks (it is
  recorded as such in every output).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlparse

import numpy as np

from operators.features import FEATURE_DIM, FEATURES_VERSION, frame_features

log = logging.getLogger("framesift.embed")

WEIGHTS_ENV = "FRAMESIFT_CLIP_WEIGHTS"
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
    resolved local file (None for random weights)."""

    kind: Literal["clip", "features"]
    model: str = "ViT-B-32"
    pretrained: str | None = None
    checkpoint: str | None = None
    weights: str | None = None  # what the user named (path or s3:// URI), resolved per node

    @property
    def name(self) -> str:
        """The embedder's name as recorded in outputs, e.g. 'clip:ViT-B-32/laion2b_s34b_b79k'."""
        if self.kind == "features":
            return FEATURES_VERSION
        if self.checkpoint and not self.pretrained:
            return f"clip:{self.model}/file:{Path(self.checkpoint).name}"
        return f"clip:{self.model}/{self.pretrained or 'random'}"


class Embedder(Protocol):
    """What the pipeline needs from an embedder."""

    name: str
    dim: int
    image_size: int

    def encode_frames(self, frames: np.ndarray) -> np.ndarray: ...

    def encode_text(self, texts: list[str]) -> np.ndarray: ...


def _download_weights(uri: str) -> str:
    """Copy a checkpoint from object storage into a per-node cache (once); returns the path."""
    import hashlib

    from operators.storage import Storage

    cache = Path(os.environ.get("FRAMESIFT_CACHE", Path.home() / ".cache" / "framesift")) / "weights"
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
    loading rules: names and shapes. The model is built on the meta device and a torch file
    is memory-mapped, so this reads the file's index, not its weights, and allocates none
    (ViT-B-32, 605 MB: 0.34-0.42 CPU-s read, which every run paid before its actor could
    start). A truncated or non-torch file still fails here; a flipped byte inside a weight
    fails neither way."""
    import warnings

    import open_clip
    import torch
    from open_clip.factory import load_checkpoint

    with torch.device("meta"):
        skeleton = open_clip.create_model(model, pretrained=None, device="meta")
    with warnings.catch_warnings(), _torch_load_mapped():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
        load_checkpoint(skeleton, checkpoint)


@contextlib.contextmanager
def _torch_load_mapped():
    """Inside the block torch.load memory-maps the files it reads (torch's process-wide
    load setting, restored after)."""
    import torch.utils.serialization

    config = torch.utils.serialization.config.load
    saved = config.mmap
    config.mmap = True
    try:
        yield
    finally:
        config.mmap = saved


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
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
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


class FeatureEmbedder:
    """The training-free features as an embedder (no model, no weights, deterministic)."""

    name = FEATURES_VERSION
    dim = FEATURE_DIM
    image_size = 224

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, 3) -> float32 (n, FEATURE_DIM), L2-normalised."""
        return frame_features(frames)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Text queries need a CLIP text tower; always raises ValueError here."""
        raise ValueError("text queries need the CLIP embedder; use a query image with 'features'")


EMBED_DTYPES = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware: x86 with AVX512-BF16 or AMX-BF16, or
    Arm with the BF16 extension. Takes the text of /proc/cpuinfo (read when None; False
    where it cannot be read). Elsewhere bf16 matrix products are emulated and slower than
    fp32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def embed_dtype(requested: str, device: str, cpuinfo: str | None = None) -> str:
    """The precision the image and text towers run in: "fp16", "bf16" or "fp32".

    Takes the requested precision (one of EMBED_DTYPES) and the device ("cuda..." or "cpu").
    "auto" is fp16 on a GPU; on a CPU it is bf16 where the CPU has native bf16 (ViT-B-32 on
    two Zen 4 cores: 84 frames/s against 22 in fp32, embeddings within cosine 0.9999 of
    fp32's), else fp32. fp16 on a CPU is refused (ValueError): it has no fast kernels there.
    """
    if requested not in EMBED_DTYPES:
        raise ValueError(f"embedding precision must be one of {', '.join(EMBED_DTYPES)}, got {requested!r}")
    gpu = device.startswith("cuda")
    if requested == "fp16" and not gpu:
        raise ValueError("fp16 embedding needs a GPU; use bf16 or fp32 on a CPU")
    if requested != "auto":
        return requested
    if gpu:
        return "fp16"
    return "bf16" if cpu_has_native_bf16(cpuinfo) else "fp32"


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
    "sparse_",
)


@contextlib.contextmanager
def _skip_weight_init(active: bool = True):
    """Within it, torch.nn.init's functions leave tensors as they are (when `active`)."""
    import torch

    if not active:
        yield
        return
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    try:
        for name in saved:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def load_checkpoint_mapped(model, checkpoint: str) -> None:
    """Load an open_clip checkpoint file into `model` (strictly, with open_clip's own
    conversions) without copying it twice: a torch file is memory-mapped rather than read
    into fresh memory, and its tensors become the model's parameters (`assign=True`) rather
    than being copied into the ones the model was built with, which are never touched (built
    under `_skip_weight_init`, they cost no memory until written). A cast to another dtype
    then reads each weight once from the page cache. Inside a busy embedding actor (2 cores,
    ViT-B-32, beside two decode tasks) building and loading the model took 2.4 CPU-s with the
    two copies and 0.2-0.3 mapped."""
    from open_clip.factory import load_checkpoint

    model.load_state_dict = functools.partial(model.load_state_dict, assign=True)
    try:
        with _torch_load_mapped():
            load_checkpoint(model, checkpoint)
    finally:
        del model.load_state_dict


# Frames per thread that a CPU actor's call should bring: below this the tower runs slower
# per frame on one thread (ViT-B-32 bf16, one thread: 30, 38, 44, 45, 46 frames/s at 1, 2, 4,
# 8, 16 frames), and on 16 cores calls of 16 frames a thread beat calls of 4 (bf16 342
# against 305 frames/s, fp32 127 against 105; benchmarks.cpu_threads).
CPU_FRAMES_PER_THREAD = 16


def splits_batches(device: str, threads: int) -> bool:
    """Whether a ClipEmbedder on `device` with `threads` threads splits each batch across
    them by default: on a CPU with more than one thread. Each thread then runs the image
    tower with one torch thread on its own slice, which was faster than torch's operator
    threads at every size measured (`benchmarks.cpu_threads`): on 2 cores (Zen 4), bf16 85
    against 76-78 frames/s; on 16 cores (Xeon with AMX), bf16 260 / 305 / 342 against 190 /
    184 / 184 frames/s at 2, 4 and 16 frames a thread, fp32 106 / 105 / 127 against 94 / 80 /
    76."""
    return device == "cpu" and threads > 1


def batch_slices(n: int, batch_size: int, workers: int = 1) -> list[slice]:
    """Split n frames into the fewest slices of equal size (to within one frame) that give
    every one of `workers` the same number of slices, none over `batch_size`. Returns the
    slices in order; none when n is 0."""
    if n <= 0:
        return []
    rounds = -(-n // (max(1, workers) * max(1, batch_size)))
    count = min(n, max(1, workers) * rounds)
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class ClipEmbedder:
    """open_clip image and text towers, batched, in inference mode.

    Frames come in already at the model's size (decode does resize + centre crop), so only
    scaling and normalisation happen here, on the device. The towers run in `dtype`
    (`embed_dtype`: by default fp16 on CUDA, bf16 on CPUs with native bf16, else fp32);
    embeddings come out as float32.

    On a CPU with `num_threads` > 1 (default: torch's thread count; `splits_batches`), the
    frames are split into equal slices of at most `batch_size` and each of `num_threads`
    Python threads runs the image tower on its own slices with one torch thread
    (`split_batches`), instead of every operator being split across the threads: no barrier
    per operator, so a thread that another process preempts holds up only its own slice,
    and no operator too small to share out. This sets torch's thread count for the whole
    process to 1. Embeddings are the same either way. Measured with ViT-B-32 alone
    (`benchmarks.cpu_threads`): on 2 cores (Zen 4), batches of 32, bf16 76 -> 85 frames/s and
    fp32 22.0 -> 23.4, and beside two processes that each take 8% of a core in short bursts
    (Ray's daemons, in miniature) bf16 66 -> 78-82; on 16 cores (Xeon with AMX), calls of 64
    frames, bf16 184 -> 305 and fp32 80 -> 105. In the job on 12 short clips (2 cores),
    alternating runs in one Ray session, bf16 dense 16.9 -> 15.8 s and cascade 8.8 -> 7.9 s
    (three each), fp32 dense 37.7 -> 35.9 s (two each).
    """

    def __init__(
        self,
        spec: EmbedderSpec,
        device: str | None = None,
        batch_size: int = 32,
        num_threads: int | None = None,
        dtype: str = "auto",
        split_batches: bool | None = None,
    ) -> None:
        import open_clip
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = num_threads or torch.get_num_threads()
        if split_batches is None:
            split_batches = splits_batches(self.device, threads)
        self._pool: ThreadPoolExecutor | None = None
        self.workers = 1
        if split_batches:
            torch.set_num_threads(1)
            self.workers = threads
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="clip-image")
        elif num_threads:
            torch.set_num_threads(num_threads)
        self.dtype_name = embed_dtype(dtype, self.device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.dtype_name]
        self.batch_size = batch_size
        self.name = spec.name
        checkpoint = local_checkpoint(spec)
        # with a checkpoint (loaded strictly: every weight is overwritten) the random
        # initialisation is wasted work: ~0.7 of ~3.7 CPU-s of an embedding actor's start
        with _skip_weight_init(checkpoint is not None):
            model = open_clip.create_model(spec.model, pretrained=None, device="cpu")
        if checkpoint:
            load_checkpoint_mapped(model, checkpoint)
        model = model.eval().to(device=self.device, dtype=self.dtype)
        if self.device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._model_name = spec.model
        self._tokenizer = None  # built on the first text: embedding frames never needs it
        pre = open_clip.get_model_preprocess_cfg(model)
        size = pre.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = torch.tensor(pre.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        std = torch.tensor(pre.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        # fold /255 and normalisation into one multiply-add
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)
        config = open_clip.get_model_config(spec.model) or {}
        self.dim = int(config["embed_dim"]) if "embed_dim" in config else len(self.encode_text(["x"])[0])

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (n, S, S, 3) frames at the model's image size -> float32 (n, D), L2-normalised."""
        if frames.ndim != 4 or frames.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected (n, {self.image_size}, {self.image_size}, 3) frames, got {frames.shape}"
            )
        out = np.empty((len(frames), self.dim), np.float32)
        slices = batch_slices(len(frames), self.batch_size, self.workers)
        if self._pool is None or len(slices) < 2:
            for sl in slices:
                self._encode_into(frames, out, sl)
        else:
            # list() re-raises the first worker's exception here
            list(self._pool.map(lambda sl: self._encode_into(frames, out, sl), slices))
        return out

    def _encode_into(self, frames: np.ndarray, out: np.ndarray, sl: slice) -> None:
        import torch

        with torch.inference_mode():  # thread-local: entered in the thread that runs the model
            x = torch.from_numpy(frames[sl]).to(self.device)
            x = x.permute(0, 3, 1, 2).float() * self._scale + self._shift
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
            e = self.model.encode_image(x).float()
            out[sl] = torch.nn.functional.normalize(e, dim=-1).cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Texts -> float32 (m, D), L2-normalised, in the image embeddings' space."""
        import torch

        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self._model_name)
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            e = self.model.encode_text(tokens).float()
            return torch.nn.functional.normalize(e, dim=-1).cpu().numpy()


def create_embedder(spec: EmbedderSpec, **kwargs) -> Embedder:
    """Build the embedder an EmbedderSpec names (kwargs go to ClipEmbedder)."""
    if spec.kind == "features":
        return FeatureEmbedder()
    return ClipEmbedder(spec, **kwargs)
