"""Frame and text embedders: open_clip's image and text towers, and the training-free features.

Building and running models lives here; where the weights come from is `operators.weights`,
the precision `operators.precision`, the CPU thread layout `operators.threads`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from operators import defaults
from operators.features import FEATURE_DIM, FEATURES_VERSION, frame_features
from operators.precision import embed_dtype
from operators.threads import batch_slices, splits_batches
from operators.torch_patches import load_checkpoint_mapped, skip_weight_init
from operators.weights import EmbedderSpec, local_checkpoint


class Embedder(Protocol):
    """What the pipeline needs from an embedder."""

    name: str
    dim: int
    image_size: int

    def encode_frames(self, frames: np.ndarray) -> np.ndarray: ...

    def encode_text(self, texts: list[str]) -> np.ndarray: ...


class FeatureEmbedder:
    """The training-free features as an embedder (no model, no weights, deterministic)."""

    name = FEATURES_VERSION
    dim = FEATURE_DIM
    image_size = defaults.FEATURES_IMAGE_SIZE

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, 3) -> float32 (n, FEATURE_DIM), L2-normalised."""
        return frame_features(frames)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Text queries need a CLIP text tower; always raises ValueError here."""
        raise ValueError("text queries need the CLIP embedder; use a query image with 'features'")


class ClipEmbedder:
    """open_clip image and text towers, batched, in inference mode.

    Frames come in already at the model's size (decode resizes and centre-crops), so only
    scaling and normalisation happen here, on the device. The towers run in `dtype`
    (`operators.precision.embed_dtype`); embeddings come out float32, L2-normalised.

    On a CPU with `num_threads` > 1 (default: torch's thread count) each batch is split into
    equal slices of at most `batch_size`, and each of `num_threads` Python threads runs the
    image tower on its own slices with one torch thread (`operators.threads`). This sets
    torch's thread count for the whole process to 1. Embeddings are the same either way.
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
        # loaded strictly, a checkpoint overwrites every weight: random init is wasted work
        with skip_weight_init(checkpoint is not None):
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
        self.image_size = spec.image_size  # what decode scaled the frames to
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


