"""On-demand frame selection as a Ray Serve application.

Two deployments:

- `SelectService`, the ingress (FastAPI through `@serve.ingress`): authorises, validates,
  fetches the video (an allowed URI, or a multipart upload), then runs the job's own
  per-video path (`operators.pipeline`): `sample_chunks` (decode, features, the cascade's
  plan) on CPU, the embedding deployment for the frames the cascade keeps, `propagate`,
  and `select_video`. The same video with the same options gets the job's frames.
- `Embedder`: the open_clip image and text towers. `@serve.batch` merges the frame chunks
  of concurrent requests into one model batch (up to `embed_max_batch_frames` frames), and
  text queries into one text batch. One GPU per replica when the cluster has GPUs. With
  the training-free `features` embedder there is no model, and no Embedder deployment.

Start it with `python -m jobs.serve [--config FILE]`, `serve run jobs.serve:app`, or
`serve deploy cluster/serve.yaml`. Every limit and option is in `jobs.serve_config`.
"""

import argparse
import asyncio
import base64
import hmac
import inspect
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import metrics

from jobs.config import ConfigError, parse_k
from jobs.serve_config import FORBIDDEN_SCHEMES, ServeConfig, read_options
from operators import defaults
from operators.decode import DecodeError, VideoInfo, probe_video, read_frames, sample_indices
from operators.embed import create_embedder
from operators.features import frame_features
from operators.pipeline import (
    SampledChunk,
    SampledVideo,
    SamplingOptions,
    SelectOptions,
    VideoSelection,
    cascade_candidates,
    propagate,
    query_vector,
    sample_chunks,
    sampling_for_detector,
    select_video,
    shot_detector_for,
    with_transition_probs,
)
from operators.process import freeze_startup_objects
from operators.select import METHODS, method_names
from operators.storage import Storage, is_remote, local_copy
from operators.weights import EmbedderSpec, resolve_embedder
from operators.write import encode_image

log = logging.getLogger("framesift.serve")

# Parameters every method takes through select_frames (the k == "auto" search and dedup).
COMMON_PARAMS = {
    "seed": "seed for randomised methods (default 0)",
    "dedup_threshold": "drop selected frames more similar than this cosine (default off)",
    "params.coverage_target": f"k='auto': coverage to reach (default {defaults.COVERAGE_TARGET})",
    "params.k_min": f"k='auto': smallest k (default {defaults.AUTO_K_MIN})",
    "params.k_max": f"k='auto': largest k (default min({defaults.AUTO_K_MAX}, service k_max))",
}
AUTO_K_PARAMS = ("coverage_target", "k_min", "k_max")


class ServiceError(Exception):
    """A refusal with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- URIs


def resolve_uri(uri: str, allowed_prefixes: list[str]) -> str:
    """Return the canonical form of `uri` if it lies under one of the (normalised)
    `allowed_prefixes`, else raise ServiceError(403). Nothing is fetched here.

    Local paths are made absolute and real (`..` and symlinks resolved) before the check;
    object-store keys with `.` or `..` segments, network schemes (http, ...), credentials,
    ports or query strings in the URI are refused outright.
    """
    if not isinstance(uri, str) or not uri.strip() or "\x00" in uri or len(uri) > 4096:
        raise ServiceError(403, "uri is not allowed")
    uri = uri.strip()
    if "://" in uri and not uri.lower().startswith("file://"):
        return _resolve_remote(uri, allowed_prefixes)
    return _resolve_local(uri, allowed_prefixes)


def _resolve_remote(uri: str, allowed_prefixes: list[str]) -> str:
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in FORBIDDEN_SCHEMES:
        raise ServiceError(403, f"{scheme}:// URIs are never fetched; use an allowed prefix")
    if parsed.query or parsed.fragment or parsed.params or "@" in parsed.netloc or ":" in parsed.netloc:
        raise ServiceError(403, "uri must not carry credentials, a port, a query or a fragment")
    segments = parsed.path.split("/")
    if ".." in segments or "." in segments:
        raise ServiceError(403, "uri must not contain '.' or '..' path segments")
    canonical = f"{scheme}://{parsed.netloc}{parsed.path}"
    if not parsed.path.strip("/") or canonical.endswith("/"):
        raise ServiceError(403, "uri must name an object, not a bucket or a folder")
    if any(p.startswith(f"{scheme}://") and canonical.startswith(p) for p in allowed_prefixes):
        return canonical
    raise ServiceError(403, "uri is not under an allowed prefix")


def _resolve_local(uri: str, allowed_prefixes: list[str]) -> str:
    if uri.lower().startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ServiceError(403, "file:// URIs must name a local path")
        path = parsed.path
    else:
        path = uri
    if not os.path.isabs(path):
        raise ServiceError(403, "local paths must be absolute")
    real = os.path.realpath(path)
    if any(p.startswith("/") and real.startswith(p) for p in allowed_prefixes):
        return real
    raise ServiceError(403, "uri is not under an allowed prefix")


# --------------------------------------------------------------------------- requests


class SelectRequest(BaseModel):
    """POST /select parameters (a JSON body, or multipart form fields of the same names)."""

    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(None, description="s3://... or local path under an allowed prefix")
    method: str | None = Field(None, description="selection method (GET /methods)")
    k: int | str | None = Field(None, description="frames to keep, or 'auto'")
    fps: float | None = Field(None, description="frames sampled per second of video")
    query: str | None = Field(None, max_length=1000, description="text query (CLIP embedder)")
    clips: bool = Field(False, description="return clip windows")
    dense: bool | None = Field(None, description="embed every sampled frame (default: the service's)")
    thumbnails: bool = Field(False, description="return base64 JPEG thumbnails")
    seed: int = Field(0, description="seed for randomised methods")
    dedup_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="near-dup cosine")
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters")
    timeout_s: float | None = Field(None, gt=0, description="deadline, at most the service's")


class FrameOut(BaseModel):
    """One selected frame."""

    timestamp_s: float
    frame_index: int
    score: float
    shot_index: int
    cluster_id: int
    clip: dict | None = None
    thumbnail_jpeg_b64: str | None = None


class SelectResponse(BaseModel):
    """POST /select answer."""

    video: dict
    method: str
    k: int
    k_requested: int | str
    embedder: str
    query: str | None
    frames: list[FrameOut]
    shots: list[dict]
    clips: list[dict] | None
    timings_s: dict


@dataclass
class Job:
    """One validated request: parameters, where the video is, and what to clean up."""

    req: SelectRequest
    method: str
    k: int | str
    fps: float
    params: dict
    uri: str | None = None
    upload_path: str | None = None
    upload_name: str | None = None
    query_image: bytes | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def source(self) -> str:
        """What the answer names as the video's source."""
        return self.uri or f"upload:{self.upload_name or 'video'}"


def method_info(name: str) -> dict:
    """A method's name, keyword parameters with defaults, and docstring (for GET /methods)."""
    fn = METHODS[name]
    doc = inspect.getdoc(fn) or ""
    params = [
        {"name": p.name, "default": _jsonable(p.default)}
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed"
    ]
    return {"name": name, "summary": doc.split("\n\n")[0].replace("\n", " "), "parameters": params,
            "doc": doc}


def _jsonable(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def validate_request(req: SelectRequest, cfg: ServeConfig, features_only: bool) -> Job:
    """Check a request against the service's limits; returns the Job or raises 422/400."""
    method = req.method or cfg.default_method
    if method not in METHODS:
        raise ServiceError(422, f"unknown method {method!r}; choose one of {', '.join(method_names())}")
    try:
        k = parse_k(req.k if req.k is not None else cfg.default_k)
    except ConfigError as exc:
        raise ServiceError(422, str(exc).replace("--k", "k")) from None
    if k != "auto" and k > cfg.k_max:
        raise ServiceError(422, f"k must be between 1 and {cfg.k_max} (or 'auto'), got {k}")
    fps = req.fps if req.fps is not None else cfg.default_fps
    if not (math.isfinite(fps) and 0 < fps <= cfg.fps_max):
        raise ServiceError(422, f"fps must be > 0 and <= {cfg.fps_max}, got {fps}")
    if req.query is not None and not req.query.strip():
        raise ServiceError(422, "query must not be empty")
    if req.query and features_only:
        raise ServiceError(422, "text queries need the CLIP embedder; this service runs 'features' "
                                "(send a query_image instead)")
    params = _validate_params(method, req.params, k, cfg)
    return Job(req=req, method=method, k=k, fps=float(fps), params=params, uri=req.uri)


def _validate_params(method: str, params: dict, k: int | str, cfg: ServeConfig) -> dict:
    allowed = {p["name"] for p in method_info(method)["parameters"]} | set(AUTO_K_PARAMS)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ServiceError(422, f"unknown parameter(s) for {method!r}: {', '.join(unknown)}; "
                                f"accepted: {', '.join(sorted(allowed))}")
    for key, value in params.items():
        if not isinstance(value, (int, float, str, bool)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ServiceError(422, f"parameter {key!r} must be a finite number, string or bool")
    out = dict(params)
    if k == "auto":
        out.setdefault("k_max", min(defaults.AUTO_K_MAX, cfg.k_max))
        if not isinstance(out["k_max"], int) or not 1 <= out["k_max"] <= cfg.k_max:
            raise ServiceError(422, f"params.k_max must be an integer in 1..{cfg.k_max}")
    return out


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


# --------------------------------------------------------------------------- answers


def build_answer(job: Job, info: VideoInfo, capped: bool, result: VideoSelection, embedder: str,
                 embedded: int, thumbs: list[str] | None, timings: dict) -> dict:
    """The JSON answer of POST /select, from the job's own per-video selection."""
    frames = result.frames()
    for j, frame in enumerate(frames):
        if not job.req.clips:
            frame["clip"] = None
        if thumbs is not None:
            frame["thumbnail_jpeg_b64"] = thumbs[j]
    return {
        "video": {
            "source": job.source, "duration_s": info.duration_s, "fps": info.fps,
            "width": info.width, "height": info.height, "num_frames": info.num_frames,
            "frames_sampled": len(result.video.timestamps), "frames_embedded": embedded,
            "sample_fps": job.fps, "frames_capped": capped,
        },
        "method": job.method, "k": int(result.selection.k), "k_requested": job.k, "embedder": embedder,
        "shot_detector": result.shot_detector,
        "query": "text" if job.req.query else ("image" if job.query_image else None),
        "frames": frames, "shots": result.shots, "clips": result.clips if job.req.clips else None,
        "timings_s": timings,
    }


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": message, "status": status}, status_code=status, headers=headers)


def _frames_in(chunks: list[np.ndarray]) -> int:
    return int(sum(len(c) for c in chunks))


def _select(video: SampledVideo, job: Job, query: np.ndarray | None, shot_detector: str) -> VideoSelection:
    options = SelectOptions(method=job.method, k=job.k, seed=job.req.seed,
                            dedup_threshold=job.req.dedup_threshold, params=job.params)
    try:
        return select_video(video, options, query, shot_detector)
    except ValueError as exc:
        raise ServiceError(422, str(exc)) from None
    except TypeError as exc:
        if job.params:  # a parameter of the wrong type for the method
            raise ServiceError(422, f"bad method parameter: {exc}") from None
        raise


async def _read_capped(request: Request, limit: int) -> bytes:
    chunks = [c async for c in _capped_stream(request, limit)]
    return b"".join(chunks)


async def _capped_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, refusing with 413 as soon as it passes `limit` bytes (and before
    reading anything when Content-Length already says so)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, f"request body of {declared} bytes is over the {limit}-byte limit")
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ServiceError(413, f"request body is over the {limit}-byte limit")
        yield chunk


def _copy_upload(src: Any, target: str) -> None:
    src.seek(0)
    with open(target, "wb") as f:
        shutil.copyfileobj(src, f, 1024 * 1024)


# --------------------------------------------------------------------------- deployments


@serve.deployment(name="Embedder")
class Embedder:
    """open_clip image + text towers behind `@serve.batch`: the frame chunks of concurrent
    requests run as one model batch. Batch size and wait come from `user_config`
    (`max_batch_frames`, `batch_wait_s`), so they can change without a restart."""

    def __init__(self, spec: dict, max_batch_frames: int = 64, num_threads: int | None = None,
                 chunk_frames: int = 16, dtype: str = "auto") -> None:
        self._model = create_embedder(EmbedderSpec(**spec), batch_size=max_batch_frames,
                                      num_threads=num_threads, dtype=dtype)
        freeze_startup_objects()  # no full collection walks the model's modules mid-request
        self._chunk_frames = chunk_frames
        self._stats = {"batches": 0, "frames": 0, "busy_s": 0.0, "max_batch_frames": 0,
                       "max_batch_requests": 0}

    def reconfigure(self, user_config: dict) -> None:
        """Apply `max_batch_frames` (frames per model batch; at least one request chunk,
        `embed_chunk_frames`, which means no batching across requests) and `batch_wait_s`."""
        frames = int(user_config.get("max_batch_frames", 64))
        wait = float(user_config.get("batch_wait_s", 0.02))
        if frames < self._chunk_frames:
            log.warning("max_batch_frames %d < embed_chunk_frames %d: using %d",
                        frames, self._chunk_frames, self._chunk_frames)
            frames = self._chunk_frames
        self.embed_frames.set_max_batch_size(frames)
        self.embed_frames.set_batch_wait_timeout_s(wait)
        self.embed_text.set_batch_wait_timeout_s(wait)
        if hasattr(self._model, "batch_size"):
            self._model.batch_size = max(frames, 1)

    def info(self) -> dict:
        """The embedder's name, output dimension and input image size."""
        return {"name": self._model.name, "dim": self._model.dim, "image_size": self._model.image_size}

    def stats(self) -> dict:
        """Batch counters since start (tests and the load benchmark read them)."""
        return dict(self._stats)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.02, batch_size_fn=_frames_in)
    async def embed_frames(self, chunks: list[np.ndarray], request_ids: list[str]) -> list[np.ndarray]:
        """uint8 frame chunks (n_i, S, S, 3) -> L2-normalised (n_i, D), one model batch."""
        sizes = [len(c) for c in chunks]
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self._model.encode_frames, np.concatenate(chunks))
        self._stats["busy_s"] += time.perf_counter() - t0
        self._stats["batches"] += 1
        self._stats["frames"] += int(sum(sizes))
        self._stats["max_batch_frames"] = max(self._stats["max_batch_frames"], int(sum(sizes)))
        self._stats["max_batch_requests"] = max(self._stats["max_batch_requests"], len(set(request_ids)))
        return list(np.split(out, np.cumsum(sizes)[:-1]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02)
    async def embed_text(self, texts: list[str]) -> list[np.ndarray]:
        """Text queries -> L2-normalised (D,) each, one text-tower batch."""
        out = await asyncio.to_thread(self._model.encode_text, texts)
        return list(out)


api = FastAPI(
    title="framesift",
    version="0.1.0",
    description="Which frames and clips of this video matter? On-demand frame selection "
    "with the same decode, features, embedding and selection code as the curation job.",
)


def _select_openapi() -> dict:
    schema = SelectRequest.model_json_schema()
    form = json.loads(json.dumps(schema))
    form["properties"]["video"] = {"type": "string", "format": "binary", "description": "the video"}
    form["properties"]["query_image"] = {"type": "string", "format": "binary"}
    form["properties"]["params"] = {"type": "string", "description": "JSON object"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema}, "multipart/form-data": {"schema": form}}}}


_REFUSALS = {
    400: {"description": "malformed JSON or multipart body"},
    401: {"description": "missing or wrong bearer token (when a token is configured)"},
    403: {"description": "uri outside the allowed prefixes"},
    404: {"description": "uri under an allowed prefix but no such object"},
    408: {"description": "request deadline passed"},
    413: {"description": "upload, video duration or frame count over the limit"},
    422: {"description": "invalid parameter, unknown method, or not a decodable video"},
}


@serve.deployment(name="SelectService")
@serve.ingress(api)
class SelectService:
    """The HTTP ingress: validation, fetch, decode + features, selection, answer."""

    def __init__(self, config: dict, spec: dict, embedder: Any = None) -> None:
        self.cfg = ServeConfig.from_dict(config).validate()
        self.spec = EmbedderSpec(**spec)
        self.shot_detector = shot_detector_for(self.cfg.shot_detector)
        self._transnet_detector = None
        self.storage = Storage(endpoint_url=self.cfg.s3_endpoint)
        self.embedder = embedder
        self._pool = ThreadPoolExecutor(max_workers=self.cfg.decode_workers, thread_name_prefix="decode")
        self._requests = metrics.Counter(
            "framesift_select_requests", "POST /select requests by method and HTTP status",
            tag_keys=("method", "status"))
        self._errors = metrics.Counter(
            "framesift_select_errors", "POST /select refusals and failures by method",
            tag_keys=("method", "status"))
        self._latency = metrics.Histogram(
            "framesift_select_latency_s", "POST /select latency (s) by method",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80], tag_keys=("method",))
        self._frames = metrics.Counter(
            "framesift_frames_embedded", "frames embedded by method", tag_keys=("method",))
        log.info("framesift service: embedder %s, allowed prefixes %s", self.spec.name,
                 self.cfg.allowed_prefixes or "(none: uploads only)")

    # ----------------------------------------------------------------- routes

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers and knows its embedder (no auth needed)."""
        return {"status": "ok", "embedder": self.spec.name}

    @api.get("/methods", responses={401: _REFUSALS[401]})
    async def methods(self, request: Request) -> JSONResponse:
        """The selection methods: names, parameters with defaults, docstrings."""
        try:
            self._authorise(request)
        except ServiceError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse({
            "methods": [method_info(n) for n in method_names()],
            "common_parameters": COMMON_PARAMS,
            "defaults": {"method": self.cfg.default_method, "k": self.cfg.default_k,
                         "fps": self.cfg.default_fps},
            "limits": {"k_max": self.cfg.k_max, "fps_max": self.cfg.fps_max,
                       "max_frames": self.cfg.max_frames, "max_duration_s": self.cfg.max_duration_s,
                       "max_upload_bytes": self.cfg.max_upload_bytes,
                       "request_timeout_s": self.cfg.request_timeout_s},
            "embedder": self.spec.name,
        })

    @api.post("/select", response_model=SelectResponse, responses=_REFUSALS,
              openapi_extra=_select_openapi())
    async def select(self, request: Request) -> JSONResponse:
        """Select the frames that matter in one video (JSON with `uri`, or a multipart
        upload with a `video` file, plus the parameters of SelectRequest)."""
        t0 = time.perf_counter()
        method, status, job = "invalid", 500, None
        try:
            self._authorise(request)
            job = await self._parse(request)
            method = job.method
            timeout = min(self.cfg.request_timeout_s, job.req.timeout_s or math.inf)
            try:
                answer = await asyncio.wait_for(self._run(job), timeout)
            except asyncio.TimeoutError:
                raise ServiceError(408, f"request took longer than its {timeout:g} s deadline") from None
            status = 200
            return JSONResponse(answer)
        except ServiceError as exc:
            status = exc.status
            return _error(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - logged, answered as a JSON 500
            log.exception("POST /select failed")
            return _error(500, f"internal error ({type(exc).__name__}); see the service log")
        finally:
            if job is not None:
                job.stack.close()
            self._count(method, status, time.perf_counter() - t0)

    # ----------------------------------------------------------------- helpers

    def _count(self, method: str, status: int, seconds: float) -> None:
        tags = {"method": method, "status": str(status)}
        self._requests.inc(tags=tags)
        if status >= 400:
            self._errors.inc(tags=tags)
        self._latency.observe(seconds, tags={"method": method})

    def _authorise(self, request: Request) -> None:
        token = os.environ.get(self.cfg.token_env) if self.cfg.token_env else None
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ServiceError(401, "missing or invalid bearer token")

    async def _parse(self, request: Request) -> Job:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            return await self._parse_multipart(request)
        if ctype not in ("application/json", ""):
            raise ServiceError(415, "send application/json or multipart/form-data")
        body = await _read_capped(request, self.cfg.max_json_bytes)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ServiceError(400, f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ServiceError(400, "the JSON body must be an object")
        job = validate_request(self._model(data), self.cfg, self.spec.kind == "features")
        if not job.uri:
            raise ServiceError(422, "give a 'uri', or upload the video as multipart field 'video'")
        job.uri = resolve_uri(job.uri, self.cfg.allowed_prefixes)
        return job

    def _model(self, data: dict) -> SelectRequest:
        try:
            return SelectRequest.model_validate(data)
        except ValidationError as exc:
            raise ServiceError(422, _validation_message(exc)) from None

    async def _parse_multipart(self, request: Request) -> Job:
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        limit = self.cfg.max_upload_bytes + self.cfg.max_query_image_bytes + 1024 * 1024
        stream = _capped_stream(request, limit)
        try:
            form = await MultiPartParser(request.headers, stream, max_files=2, max_fields=32).parse()
        except MultiPartException as exc:
            raise ServiceError(400, f"malformed multipart body: {exc.message}") from None
        try:
            files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
            fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
            unknown_files = set(files) - {"video", "query_image"}
            if unknown_files:
                raise ServiceError(422, f"unexpected file field(s): {', '.join(sorted(unknown_files))}")
            if "params" in fields:
                try:
                    fields["params"] = json.loads(fields["params"])
                except json.JSONDecodeError as exc:
                    raise ServiceError(400, f"field 'params' is not valid JSON: {exc}") from None
            job = validate_request(self._model(fields), self.cfg, self.spec.kind == "features")
            await self._take_files(job, files)
            return job
        finally:
            await form.close()

    async def _take_files(self, job: Job, files: dict) -> None:
        video, image = files.get("video"), files.get("query_image")
        if video is not None and job.uri:
            raise ServiceError(422, "give either a 'uri' or a 'video' upload, not both")
        if video is None and not job.uri:
            raise ServiceError(422, "give a 'uri', or upload the video as multipart field 'video'")
        if job.uri:
            job.uri = resolve_uri(job.uri, self.cfg.allowed_prefixes)
        if image is not None:
            if job.req.query:
                raise ServiceError(422, "give either 'query' (text) or 'query_image', not both")
            if (image.size or 0) > self.cfg.max_query_image_bytes:
                raise ServiceError(413, f"query_image is larger than {self.cfg.max_query_image_bytes} bytes")
            job.query_image = await image.read()
        if video is not None:
            if (video.size or 0) > self.cfg.max_upload_bytes:
                raise ServiceError(413, f"upload is larger than the {self.cfg.max_upload_bytes}-byte limit")
            tmpdir = tempfile.mkdtemp(prefix="framesift-upload-")
            job.stack.callback(shutil.rmtree, tmpdir, ignore_errors=True)
            suffix = re.sub(r"[^A-Za-z0-9.]", "", os.path.splitext(video.filename or "")[1])[:10]
            job.upload_path = os.path.join(tmpdir, "video" + suffix)
            job.upload_name = os.path.basename(video.filename or "video")[:200]
            await asyncio.to_thread(_copy_upload, video.file, job.upload_path)

    async def _run(self, job: Job) -> dict:
        loop = asyncio.get_running_loop()
        timings: dict[str, float] = {}
        t = time.perf_counter()
        path = await loop.run_in_executor(self._pool, self._fetch, job)
        timings["fetch"] = time.perf_counter() - t
        t = time.perf_counter()
        info, chunks, capped = await loop.run_in_executor(self._pool, self._decode, path, job)
        timings["decode_features"] = time.perf_counter() - t
        t = time.perf_counter()
        embeddings, query = await asyncio.gather(self._embed(chunks, job), asyncio.to_thread(self._query, job))
        timings["embed"] = time.perf_counter() - t
        # as the job counts them: the model's inputs, or every frame's features without one
        embedded = sum(len(c.frames) if c.frames is not None else len(c.features) for c in chunks)
        self._frames.inc(embedded, tags={"method": job.method})
        video = SampledVideo.concat(chunks, embeddings, info.duration_s, info.fps)
        t = time.perf_counter()
        result = await loop.run_in_executor(self._pool, _select, video, job, query, self.shot_detector)
        timings["select"] = time.perf_counter() - t
        thumbs = None
        if job.req.thumbnails:
            t = time.perf_counter()
            thumbs = await loop.run_in_executor(
                self._pool, self._thumbnails, path, video.frame_index[result.selection.indices], info)
            timings["thumbnails"] = time.perf_counter() - t
        return build_answer(job, info, capped, result, self.spec.name, embedded, thumbs, timings)

    def _fetch(self, job: Job) -> str:
        """Local path of the request's video: the upload, a local file, or a download."""
        if job.upload_path:
            return job.upload_path
        uri = job.uri or ""
        try:
            fs, path = self.storage.fs_for(uri)
            size = int(fs.info(path).get("size") or 0)
            if fs.isdir(path):
                raise ServiceError(422, "uri names a folder, not a video")
        except ServiceError:
            raise
        except FileNotFoundError:
            raise ServiceError(404, f"no such object: {uri}") from None
        except PermissionError as exc:
            raise ServiceError(403, f"storage refused access to {uri}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - storage errors become one clear 502
            raise ServiceError(502, f"cannot reach {uri}: {type(exc).__name__}: {exc}") from None
        if size > self.cfg.max_upload_bytes:
            raise ServiceError(413, f"video is {size} bytes, over the {self.cfg.max_upload_bytes}-byte limit")
        try:
            return job.stack.enter_context(local_copy(self.storage, uri))
        except Exception as exc:  # noqa: BLE001
            kind = "download" if is_remote(uri) else "read"
            raise ServiceError(502, f"cannot {kind} {uri}: {type(exc).__name__}: {exc}") from None

    def _sampling(self, job: Job) -> SamplingOptions:
        """The job's sampling and cascade, with this request's fps and the service's caps."""
        dense = self.cfg.dense if job.req.dense is None else job.req.dense
        return SamplingOptions(
            fps=job.fps, size=self.spec.image_size, chunk_frames=self.cfg.chunk_frames,
            max_frames=self.cfg.max_frames, cascade_ratio=None if dense else self.cfg.cascade_ratio,
            min_candidates=cascade_candidates(job.k), with_model=self.embedder is not None,
            **sampling_for_detector(self.shot_detector),
        )

    def _decode(self, path: str, job: Job) -> tuple[VideoInfo, list[SampledChunk], bool]:
        """Probe, check the limits, then the job's `sample_chunks`: (info, chunks, capped)."""
        try:
            info = probe_video(path)
        except DecodeError as exc:
            raise ServiceError(422, f"not a decodable video: {exc}") from None
        self._check_limits(info)
        wanted = len(sample_indices(info, job.fps))
        capped = wanted > self.cfg.max_frames
        if capped and self.cfg.too_many_frames == "refuse":
            raise ServiceError(413, f"{wanted} frames at fps={job.fps:g} is over the limit of "
                                    f"{self.cfg.max_frames}; lower fps")
        try:
            chunks = list(sample_chunks(path, info, self._sampling(job)))
        except DecodeError as exc:
            raise ServiceError(422, f"not a decodable video: {exc}") from None
        if not chunks:
            raise ServiceError(422, "no frames could be decoded")
        if self.shot_detector == "transnetv2":
            chunks = with_transition_probs(chunks, self._transnet())
        return info, chunks, capped

    def _transnet(self):
        """TransNetV2 in this replica, loaded on first use (on its GPU when it has one)."""
        if self._transnet_detector is None:
            from operators.transnet import TransNetV2Detector

            self._transnet_detector = TransNetV2Detector()
        return self._transnet_detector

    def _check_limits(self, info: VideoInfo) -> None:
        if info.duration_s > self.cfg.max_duration_s:
            raise ServiceError(413, f"video lasts {info.duration_s:.1f} s, over the "
                                    f"{self.cfg.max_duration_s:g} s limit")

    async def _embed(self, chunks: list[SampledChunk], job: Job) -> list[np.ndarray | None]:
        """Each chunk's per-frame embeddings: the model's for the frames the cascade kept,
        propagated to their groups (None without a model: the features are the embedding)."""
        if self.embedder is None:
            return [None] * len(chunks)
        step = self.cfg.embed_chunk_frames
        calls = [[self.embedder.embed_frames.remote(c.frames[s : s + step], job.request_id)
                  for s in range(0, len(c.frames), step)] for c in chunks]
        outs = await asyncio.gather(*(asyncio.gather(*parts) for parts in calls))
        return [propagate(np.concatenate(out) if out else np.zeros((0, 1), np.float32), c.group_of)
                for c, out in zip(chunks, outs, strict=True)]

    def _query(self, job: Job) -> np.ndarray | None:
        """The request's query vector (`pipeline.query_vector`, as the job computes it),
        from a worker thread: the embedding deployment's answers are awaited blocking."""
        if self.embedder is None:
            encode_text, encode_frames = None, frame_features
        else:
            def encode_text(texts: list[str]) -> np.ndarray:
                return np.stack([self.embedder.embed_text.remote(t).result() for t in texts])

            def encode_frames(frames: np.ndarray) -> np.ndarray:
                return self.embedder.embed_frames.remote(frames, job.request_id).result()
        try:
            return query_vector(job.req.query.strip() if job.req.query else None, job.query_image,
                                encode_text=encode_text, encode_frames=encode_frames,
                                image_size=self.spec.image_size)
        except DecodeError as exc:
            raise ServiceError(422, f"query_image is {exc}") from None

    def _thumbnails(self, path: str, frame_index: np.ndarray, info: VideoInfo) -> list[str]:
        try:
            pixels = read_frames(path, frame_index, self.cfg.thumbnail_max_side, info=info)
        except DecodeError as exc:
            raise ServiceError(422, f"frames could not be read for thumbnails: {exc}") from None
        return [base64.b64encode(encode_image(p, "jpeg", self.cfg.thumbnail_quality)).decode("ascii")
                for p in pixels]


# --------------------------------------------------------------------------- the application


def _deployment_options(options: dict, *, gpu_capable: bool) -> dict:
    """Serve options from the config: drop unset ones; resolve num_gpus 'auto' to one GPU
    per replica when the cluster has GPUs (and `gpu_capable`), else none."""
    out = {k: v for k, v in options.items() if v is not None}
    actor = dict(out.get("ray_actor_options") or {})
    if actor.get("num_gpus") == "auto":
        actor["num_gpus"] = 1 if gpu_capable and _cluster_gpus() > 0 else 0
    if actor:
        out["ray_actor_options"] = actor
    if "autoscaling_config" in out and "num_replicas" in out:
        out.pop("num_replicas")
    return out


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def build_app(args: dict | None = None) -> serve.Application:
    """The application: defaults, the FRAMESIFT_SERVE_CONFIG file, then `args` (a `serve
    build` config's `args:` or `serve run jobs.serve:build_app key=value`). Resolves the
    embedder once, before anything is deployed (CLIP weights that cannot load fail here)."""
    cfg = ServeConfig.load(args)
    spec = resolve_embedder(cfg.embedder, cfg.model, cfg.pretrained, cfg.weights)
    log.warning("framesift service: embedder %s", spec.name)
    embedder = None
    if spec.kind == "clip":
        options = _deployment_options(cfg.embedding, gpu_capable=True)
        options["user_config"] = {"max_batch_frames": cfg.embed_max_batch_frames,
                                  "batch_wait_s": cfg.embed_batch_wait_s}
        embedder = Embedder.options(**options).bind(*embedder_args(cfg, spec))
    ingress = SelectService.options(**_deployment_options(cfg.ingress, gpu_capable=False))
    return ingress.bind(cfg.to_dict(), spec.to_dict(), embedder)


def embedder_args(cfg: ServeConfig, spec: EmbedderSpec) -> tuple:
    """The Embedder deployment's constructor arguments: the whole spec (its `weights` too,
    so that a replica on a node without the driver's checkpoint file resolves the user's
    file or URI again), then the batching, thread and precision settings."""
    return (spec.to_dict(), cfg.embed_max_batch_frames, cfg.embed_num_threads, cfg.embed_chunk_frames,
            cfg.embed_dtype)


def __getattr__(name: str) -> Any:
    # `serve run jobs.serve:app` builds the application on first access, not on import.
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framesift-serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file of service options (see jobs/serve_config.py)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--allowed-prefix", action="append", default=None,
                   help="readable URI prefix (s3://bucket/prefix/ or a local folder); repeatable")
    p.add_argument("--embedder", choices=["auto", "clip", "features"], help="embedder (default auto)")
    p.add_argument("--model", help="open_clip model name")
    p.add_argument("--pretrained", help="open_clip pretrained tag")
    p.add_argument("--weights", help="local CLIP checkpoint file or directory")
    p.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    return p


def main(argv: list[str] | None = None) -> int:
    """`framesift-serve`: start the application on Ray (RAY_ADDRESS, or a local instance)
    and serve until interrupted."""
    import ray

    ns = _parser().parse_args(argv)
    try:
        overrides: dict[str, Any] = read_options(ns.config) if ns.config else {}
    except ConfigError as exc:
        print(f"framesift-serve: {exc}")
        return 2
    for key in ("embedder", "model", "pretrained", "weights", "s3_endpoint"):
        if getattr(ns, key) is not None:
            overrides[key] = getattr(ns, key)
    if ns.allowed_prefix:
        overrides["allowed_prefixes"] = ns.allowed_prefix
    try:
        ServeConfig.load(overrides)  # a bad option fails here, before Ray starts
    except ConfigError as exc:
        print(f"framesift-serve: {exc}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)
    try:
        application = build_app(overrides)
    except (ConfigError, RuntimeError) as exc:
        print(f"framesift-serve: {exc}")
        return 2
    serve.start(http_options={"host": ns.host, "port": ns.port})
    serve.run(application, name="framesift", route_prefix="/")
    print(f"framesift service on http://{ns.host}:{ns.port} (docs: /docs); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

