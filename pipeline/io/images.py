"""Decoding image bytes into the library's tensor convention, with clear errors for bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000  # decompression-bomb guard: about 8000 x 8000


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Image bytes -> 3 x H x W float32 in [0, 1].

    Handles grayscale, palette, CMYK, 16-bit and alpha images (alpha composited on white), and EXIF
    orientation. Raises ImageDecodeError for empty, truncated, corrupt, non-image or oversized input.
    """
    if not data:
        raise ImageDecodeError("empty image (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}")
                image.load()
                image = ImageOps.exif_transpose(image)
                array = _to_rgb_array(image)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"decompression bomb: {error}") from error
    except Exception as error:  # PIL raises many types for bad bytes
        raise ImageDecodeError(f"cannot decode image: {type(error).__name__}: {error}") from error
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float32)
        scale = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        gray = np.clip(values / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    rgb = image.convert("RGB")  # L, 1, CMYK, YCbCr, ... all have a defined conversion
    return np.asarray(rgb, dtype=np.float32) / 255.0


def encode_png(image: torch.Tensor) -> bytes:
    """3 x H x W in [0, 1] -> PNG bytes (lossless, so a purified image is stored as computed)."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
