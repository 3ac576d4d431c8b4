"""CLIP image and text embeddings behind the :class:`Embedder` protocol.

:func:`create_embedder` is the one factory: ``None`` in hash-only mode, else a
:class:`ClipEmbedder`.
A model is loaded once per process (cached by model, device and precision), lazily, never at import
time; ``torch`` and ``transformers`` are imported inside functions so that importing this module is
cheap. Images are preprocessed with PIL + numpy in batches, equivalent to ``CLIPImageProcessor``
(whose per-image path is slow) and configured from the model's own processor config.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image

from services.errors import ModelError

if TYPE_CHECKING:
    import torch

    from services.settings import Settings

logger = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp32"]
Bf16Strategy = Literal["cast", "autocast"]

_FIX_HINT = (
    "set LOOKALIKE_CLIP_MODEL to a local directory holding a saved CLIP model "
    "(the output of CLIPModel/CLIPTokenizerFast/CLIPImageProcessor .save_pretrained), "
    "or set LOOKALIKE_CLIP_MODEL=none to run hash-only"
)


class Embedder(Protocol):
    """Turns images and texts into L2-normalised float32 vectors of one dimension."""

    model_id: str
    dim: int

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array with unit rows; ``(0, dim)`` for no images."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array with unit rows; ``(0, dim)`` for no texts."""
        ...


@dataclass(frozen=True)
class ImagePreprocessing:
    """The CLIPImageProcessor steps we replicate: resize, center crop, rescale, normalise."""

    resize_shortest_edge: int | None  # None: resize to (resize_height, resize_width)
    resize_height: int | None
    resize_width: int | None
    resample: Image.Resampling
    crop_height: int | None  # None: no center crop
    crop_width: int | None
    rescale_factor: float  # 1.0 when rescaling is off
    mean: tuple[float, float, float]  # (0, 0, 0) / (1, 1, 1) when normalising is off
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, processor: Any) -> ImagePreprocessing:
        """Read the steps from a loaded ``CLIPImageProcessor``."""
        size = dict(processor.size) if processor.do_resize else {}
        crop = dict(processor.crop_size) if processor.do_center_crop else {}
        normalize = bool(processor.do_normalize)
        mean = tuple(float(v) for v in processor.image_mean) if normalize else (0.0, 0.0, 0.0)
        std = tuple(float(v) for v in processor.image_std) if normalize else (1.0, 1.0, 1.0)
        if len(mean) != 3 or len(std) != 3:
            raise ModelError(f"image processor has {len(mean)} channel means; CLIP needs 3 (RGB)")
        return cls(
            resize_shortest_edge=size.get("shortest_edge"),
            resize_height=size.get("height"),
            resize_width=size.get("width"),
            resample=Image.Resampling(int(processor.resample)),
            crop_height=crop.get("height"),
            crop_width=crop.get("width"),
            rescale_factor=float(processor.rescale_factor) if processor.do_rescale else 1.0,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
        )

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize and crop one image; an ``(h, w, 3)`` uint8 array."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        if self.resize_shortest_edge is not None:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = (
                self.resize_shortest_edge,
                int(self.resize_shortest_edge * long / short),
            )
            size = (new_short, new_long) if width <= height else (new_long, new_short)
            image = image.resize(size, self.resample)
        elif self.resize_height is not None and self.resize_width is not None:
            image = image.resize((self.resize_width, self.resize_height), self.resample)
        if self.crop_height is not None and self.crop_width is not None:
            width, height = image.size
            top = (height - self.crop_height) // 2
            left = (width - self.crop_width) // 2
            # PIL fills any part of the box outside the image with black, as HF pads with zeros.
            image = image.crop((left, top, left + self.crop_width, top + self.crop_height))
        return np.asarray(image, dtype=np.uint8)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess a batch into ``(n, 3, h, w)`` float32 pixel values."""
        pixels = np.stack([self.to_uint8(image) for image in images]).astype(np.float32)
        # rescale then normalise, folded into one affine map per channel
        scale = np.asarray(self.std, np.float32)
        pixels *= np.float32(self.rescale_factor) / scale
        pixels -= np.asarray(self.mean, np.float32) / scale
        return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class _LoadedClip:
    model: Any  # transformers.CLIPModel, eval mode, on device, maybe cast to bf16
    tokenizer: Any  # transformers.CLIPTokenizerFast
    preprocessing: ImagePreprocessing
    device: str
    precision: Literal["bf16", "fp32"]
    autocast: bool  # True: fp32 weights under torch.autocast(bf16)
    max_text_length: int
    dim: int


class ClipEmbedder:
    """An :class:`Embedder` over a Hugging Face ``CLIPModel``. Build it with :meth:`load`."""

    def __init__(self, model_id: str, loaded: _LoadedClip, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_id = model_id
        self.dim = loaded.dim
        self.device = loaded.device
        self.precision: str = loaded.precision
        self.batch_size = batch_size
        self._loaded = loaded

    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str = "auto",
        precision: Precision = "auto",
        batch_size: int = 32,
        bf16_strategy: Bf16Strategy = "cast",
    ) -> ClipEmbedder:
        """Load (once per process) the CLIP model ``model``: a hub id or a local directory.

        ``precision="auto"`` uses bf16 where the device supports it, else fp32. ``bf16_strategy``
        picks how bf16 runs: weights cast to bf16 (faster on CPU) or fp32 weights under autocast.
        Raises ModelError, saying how to fix it, when the model cannot be found or loaded.
        """
        resolved_device = _resolve_device(device)
        resolved_precision = _resolve_precision(precision, resolved_device)
        strategy = bf16_strategy if resolved_precision == "bf16" else "cast"
        loaded = _load_cached(model, resolved_device, resolved_precision, strategy)
        return cls(model, loaded, batch_size)

    @property
    def model(self) -> Any:
        """The underlying ``transformers.CLIPModel`` (shared by every embedder of the process)."""
        return self._loaded.model

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The model's pixel values for ``images``: ``(n, 3, h, w)`` float32."""
        return self._loaded.preprocessing(images)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded images; ``(n, dim)`` float32 with unit rows."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            out[start : start + len(batch)] = self._run_images(self.preprocess(batch))
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, truncated to the model's context length; ``(n, dim)`` float32, unit rows."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out[start : start + len(batch)] = self._run_texts(batch)
        return out

    def _run_images(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        loaded = self._loaded
        dtype = torch.bfloat16 if loaded.precision == "bf16" and not loaded.autocast else None
        pixels = torch.from_numpy(pixel_values).to(loaded.device, dtype=dtype)
        with self._inference():
            features = loaded.model.get_image_features(pixel_values=pixels)
        return _normalised(features)

    def _run_texts(self, texts: list[str]) -> np.ndarray:
        loaded = self._loaded
        tokens = loaded.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=loaded.max_text_length,
            return_tensors="pt",
        ).to(loaded.device)
        with self._inference():
            features = loaded.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        return _normalised(features)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        import torch

        loaded = self._loaded
        device_type = torch.device(loaded.device).type
        try:
            with (
                torch.inference_mode(),
                torch.autocast(device_type, dtype=torch.bfloat16, enabled=loaded.autocast),
            ):
                yield
        except RuntimeError as exc:
            raise ModelError(
                f"CLIP model {self.model_id} failed on {loaded.device} ({loaded.precision}): {exc}"
            ) from exc


def _normalised(features: torch.Tensor) -> np.ndarray:
    import torch

    # eps keeps an all-zero row zero instead of NaN
    unit = torch.nn.functional.normalize(features.float(), dim=-1, eps=1e-12)
    return unit.cpu().numpy()


def create_embedder(settings: Settings) -> Embedder | None:
    """The configured embedder: None when hash-only (``LOOKALIKE_CLIP_MODEL=none``), else CLIP."""
    if settings.hash_only:
        return None
    return ClipEmbedder.load(
        settings.clip_model,
        device=settings.clip_device,
        precision=settings.clip_precision,
        batch_size=settings.clip_batch_size,
    )


def bf16_supported(device: str) -> bool:
    """Whether ``device`` runs bf16 natively: a CPU with AMX or AVX512-BF16, or a bf16 GPU."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return _cpu_has_bf16()
    return False


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: no cheap reliable probe, so fp32 is the safe default
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def clear_model_cache() -> None:
    """Forget every loaded model (tests; freeing memory). Embedders already built keep theirs."""
    with _cache_lock:
        _cache.clear()


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_precision(precision: Precision, device: str) -> Literal["bf16", "fp32"]:
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        logger.warning(
            "bf16 requested on %s, which lacks native bf16: expect it to be slow", device
        )
    return precision


_cache: dict[tuple[str, str, str, str], _LoadedClip] = {}
_cache_lock = threading.Lock()


def _load_cached(
    model: str, device: str, precision: Literal["bf16", "fp32"], strategy: Bf16Strategy
) -> _LoadedClip:
    key = (model, device, precision, strategy)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _load(model, device, precision, strategy)
            _cache[key] = loaded
        return loaded


def _load(
    model: str, device: str, precision: Literal["bf16", "fp32"], strategy: Bf16Strategy
) -> _LoadedClip:
    import torch

    source = _check_source(model)
    clip, tokenizer, processor = _from_pretrained(source, model)
    clip.eval()
    autocast = precision == "bf16" and strategy == "autocast"
    dtype = torch.bfloat16 if precision == "bf16" and not autocast else torch.float32
    try:
        clip.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as exc:  # AssertionError: torch without CUDA
        raise ModelError(f"cannot move CLIP model {model} to device {device}: {exc}") from exc
    loaded = _LoadedClip(
        model=clip,
        tokenizer=tokenizer,
        preprocessing=ImagePreprocessing.from_processor(processor),
        device=device,
        precision=precision,
        autocast=autocast,
        max_text_length=int(clip.config.text_config.max_position_embeddings),
        dim=int(clip.config.projection_dim),
    )
    logger.info(
        "loaded CLIP model %s on %s (%s%s, dim %d, %d torch threads)",
        model,
        device,
        precision,
        " autocast" if autocast else "",
        loaded.dim,
        torch.get_num_threads(),
    )
    return loaded


def _check_source(model: str) -> str:
    """Fail fast on a local path that does not hold a model; hub ids pass through."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"CLIP model path {model} is a file, not a directory; {_FIX_HINT}")
        return str(path)
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise ModelError(f"CLIP model directory {model} does not exist; {_FIX_HINT}")
    return model


def _from_pretrained(source: str, model: str) -> tuple[Any, Any, Any]:
    # Imported here so that importing this module stays cheap (no torch/transformers).
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    def fetch(local_only: bool) -> tuple[Any, Any, Any]:
        return (
            CLIPModel.from_pretrained(source, local_files_only=local_only),
            CLIPTokenizerFast.from_pretrained(source, local_files_only=local_only),
            CLIPImageProcessor.from_pretrained(source, local_files_only=local_only),
        )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        try:
            # A local directory or a model already in the hub cache: no network round trips.
            return fetch(local_only=True)
        except OSError:
            if offline or Path(source).is_dir():
                raise
            endpoint = _hub_endpoint()
            if not _reachable(endpoint):
                # huggingface_hub would retry for most of a minute; fail at once instead.
                raise ModelError(
                    f"CLIP model {model} is not in the local Hugging Face cache and {endpoint} "
                    f"cannot be reached to download it; {_FIX_HINT}"
                ) from None
            logger.info(
                "CLIP model %s is not cached; downloading it from the Hugging Face hub", model
            )
            return fetch(local_only=False)
    except (OSError, ValueError) as exc:  # HFValidationError is a ValueError
        where = "directory" if Path(source).is_dir() else "model"
        mode = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise ModelError(
            f"cannot load CLIP {where} {model}{mode}: {_first_line(exc)}; {_FIX_HINT}"
        ) from exc


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _reachable(url: str, timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens quickly (always True behind a proxy)."""
    proxy_vars = (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    )
    if any(os.environ.get(name) for name in proxy_vars):
        return True  # the proxy, not us, decides what is reachable
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
