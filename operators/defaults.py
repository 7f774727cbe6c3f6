"""The defaults the job and the service share, and the environment variables framesift reads.

One place for each: `jobs.config.CurateConfig`, `jobs.serve_config.ServeConfig`, the
operators and the docs take them from here, so the job and the service cannot drift apart.
"""

from __future__ import annotations

# --- embedding
MODEL = "ViT-B-32"  # open_clip model name
PRETRAINED = "laion2b_s34b_b79k"  # open_clip pretrained tag
EMBEDDER = "auto"  # auto | clip | features
EMBED_DTYPE = "auto"  # auto | fp32 | bf16 | fp16
FEATURES_IMAGE_SIZE = 224  # frame size the training-free features are computed at

# --- sampling and the cascade
FPS = 1.0  # frames sampled per second of video
CHUNK_FRAMES = 64  # sampled frames per chunk: the cascade plans each chunk on its own
CASCADE_RATIO = 0.12  # at most this share of a video's sampled frames is embedded
SEGMENT_S = 600.0  # a video at least twice this long is decoded in spans this long, at once

# --- shots
SHOT_DETECTOR = "auto"  # auto | features | transnetv2 | sampled (see operators.segment)
SHOT_DETECTORS = ("auto", "features", "transnetv2", "sampled")

# --- selection
METHOD = "kmeans"
K = 16  # frames kept per video
AUTO_K_MIN = 1  # k="auto": the adaptive budget's bounds ...
AUTO_K_MAX = 32
COVERAGE_TARGET = 0.9  # ... and the coverage it must reach

# --- environment variables
WEIGHTS_ENV = "FRAMESIFT_CLIP_WEIGHTS"  # CLIP checkpoint file, folder or s3:// URI
CACHE_ENV = "FRAMESIFT_CACHE"  # per-node cache root (downloaded weights)
SOURCE_CACHE_ENV = "FRAMESIFT_SOURCE_CACHE"  # node-local copies of sources
SOURCE_CACHE_GB_ENV = "FRAMESIFT_SOURCE_CACHE_GB"  # their size limit
SERVE_CONFIG_ENV = "FRAMESIFT_SERVE_CONFIG"  # the service's YAML file
SERVE_OPTIONS_ENV = "FRAMESIFT_SERVE_OPTIONS"  # inline YAML options for the service
SERVE_TOKEN_ENV = "FRAMESIFT_SERVE_TOKEN"  # bearer token the service asks for, when set
