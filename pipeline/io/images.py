"""Decoding image bytes into the library's tensor convention, with clear errors for bad input.

Two ways in: `decode_image` keeps the image's own size (a few files, attacks, evaluation), and
`decode_working` brings it to a model's working geometry while decoding (corpora): the shorter side to
`size` and a central square crop, as CLIP and ImageBind preprocess. Every image of a corpus then has
the same shape, so batches are full, and a huge input costs what its working size costs: JPEGs are
decoded at reduced scale (DCT scaling), and only the crop region is resampled.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torch is imported where tensors are made: decode and write workers never load it
    import torch

DEFAULT_MAX_PIXELS = 64_000_000  # decompression-bomb guard: about 8000 x 8000
# Peak memory of `decode_working` per pixel of the stored image (after JPEG draft scaling), measured
# over every decoded format and mode by tests/io/test_images.py (in a fresh process, peak RSS): at
# most this, plus DECODE_FIXED_BYTES, times `max_pixels` (576 MB at the default; WebP 1.1 GB: Pillow's
# WebP decoder keeps its own canvas and a copy of the frame besides the image).
DECODE_BYTES_PER_PIXEL = {"WEBP": 17}
DECODE_BYTES_PER_PIXEL_DEFAULT = 9
DECODE_BYTES_PER_PIXEL_MAX = max(DECODE_BYTES_PER_PIXEL_DEFAULT, *DECODE_BYTES_PER_PIXEL.values())
DECODE_FIXED_BYTES = 16 << 20
# Structures whose decoding cost grows with a count the pixel limit does not bound: a progressive
# JPEG may repeat scans (each costs a pass over every coefficient, in a few bytes: 3,000 scans of a
# 2000 x 2000 image take a minute), a TIFF may store one strip per row (a 1 x 2,000,000 TIFF took
# 20 s and 666 MiB; Pillow holds about 300 bytes per strip or tile, so 40,000 stay within
# DECODE_FIXED_BYTES). Ordinary files use a dozen scans and a few thousand strips at most.
MAX_JPEG_SCANS = 100
MAX_TIFF_PIECES = 40_000

# The formats decoded from corpus bytes, whatever a member's extension says: common raster formats
# only. Plugins that run external programs or parse complex containers (EPS runs Ghostscript; PDF,
# MPEG, FITS, PSD, WMF, ...) never see corpus bytes; an image in such a format is an error sample.
DECODED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO")  # JPEG includes MPO

# Members treated as images: every extension WebDataset's image decoder handles (its list is the
# extensions Pillow can open) and every extension this Pillow can open. An image a downstream loader
# would decode is therefore examined, or its sample is an error; it is never passed on as "no image".
_WEBDATASET_IMAGE_EXTENSIONS = (
    "blp bmp dib bufr cur pcx dcx dds ps eps fit fits fli flc ftc ftu gbr gif grib h5 hdf png apng jp2 j2k jpc jpf jpx "
    "j2c icns ico im iim tif tiff jfif jpe jpg jpeg mpg mpeg msp pcd pxr pbm pgm ppm pnm psd bw rgb rgba sgi ras tga "
    "icb vda vst webp wmf emf xbm xpm"
).split()


def _pillow_extensions() -> set[str]:
    Image.init()
    return {ext[1:].lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


IMAGE_EXTENSIONS = frozenset(_WEBDATASET_IMAGE_EXTENSIONS) | _pillow_extensions()


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


@dataclass(frozen=True)
class WorkingImage:
    """An image at a model's working geometry."""

    pixels: np.ndarray  # size x size x 3, uint8
    original_size: tuple[int, int]  # (width, height) as stored in the file
    format: str | None = None  # Pillow's name for the stored format (PNG, JPEG, ...)


@contextlib.contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The image behind `data`, its declared size checked; every failure becomes ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty image (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}")
                _check_cost(image, data)
                yield image
    except ImageDecodeError:
        raise
    except MemoryError as error:
        raise ImageDecodeError("decoding needs more memory than is available to it") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"decompression bomb: {error}") from error
    except Image.UnidentifiedImageError as error:
        raise ImageDecodeError(f"not an image in a decoded format ({', '.join(DECODED_FORMATS)})") from error
    except Exception as error:  # PIL raises many types for bad bytes
        raise ImageDecodeError(f"cannot decode image: {type(error).__name__}: {error}") from error


def decode_bytes_per_pixel(fmt: str | None) -> int:
    """The documented peak memory of decoding, per stored pixel, for a Pillow format name."""
    return DECODE_BYTES_PER_PIXEL.get(fmt or "", DECODE_BYTES_PER_PIXEL_DEFAULT)


def _check_cost(image: Image.Image, data: bytes) -> None:
    """Refuse the structures whose decoding cost is not bounded by the pixel count (see MAX_JPEG_SCANS)."""
    if image.format in ("JPEG", "MPO"):
        scans = data.count(b"\xff\xda")  # start-of-scan markers (0xFF never appears unescaped in entropy-coded data)
        if scans > MAX_JPEG_SCANS:
            raise ImageDecodeError(f"a JPEG with {scans} scans (more than {MAX_JPEG_SCANS}): decoding it costs a pass per scan")
    elif image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        pieces = len(tags.get(273) or ()) + len(tags.get(324) or ())  # StripOffsets, TileOffsets
        if pieces > MAX_TIFF_PIECES:
            raise ImageDecodeError(f"a TIFF in {pieces} strips or tiles (more than {MAX_TIFF_PIECES}): decoding it costs a call per piece")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Image bytes -> 3 x H x W float32 in [0, 1], at the image's own size.

    Handles grayscale, palette, CMYK, 16-bit and alpha images (alpha composited on white), and EXIF
    orientation. Raises ImageDecodeError for empty, truncated, corrupt, non-image or oversized input.
    """
    import torch

    with _opened(data, max_pixels) as image:
        image.load()
        array = _to_rgb_array(ImageOps.exif_transpose(image))
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def decode_working(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> WorkingImage:
    """Image bytes -> `size` x `size` x 3 uint8: shorter side scaled to `size`, central square crop.

    Same modes, orientation and errors as `decode_image`. The image is resampled in its own mode
    and converted afterwards, so at most one full-size copy is made besides the decoded pixels (for
    palette and bilevel images, whose own resampling is nearest-neighbour); memory is bounded in
    `DECODE_BYTES_PER_PIXEL`. JPEGs decode at 1/2, 1/4 or 1/8 scale whenever that still
    covers the working size.
    """
    if size < 1:
        raise ValueError("the working size must be at least 1 pixel")
    with _opened(data, max_pixels) as image:
        original, fmt = image.size, image.format
        scale = size / min(original)
        # JPEG (and MPO) decode at a reduced DCT scale that still covers the working size; a no-op elsewhere.
        image.draft(None, (math.ceil(original[0] * scale), math.ceil(original[1] * scale)))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode.startswith("I;16"):  # no box reduction in this mode; 32-bit integers have it
            image = image.convert("I")
        pixels = np.asarray(_to_rgb_image(_shorter_side_and_centre_crop(image, size)), dtype=np.uint8)
    return WorkingImage(pixels, original, fmt)


def _shorter_side_and_centre_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    scaled_w, scaled_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (scaled_w - size) // 2, (scaled_h - size) // 2
    # Resample only the crop region (in source coordinates): a 8 x 250,000 strip never becomes a
    # 32 x 1,000,000 intermediate. reducing_gap lets PIL box-reduce large inputs first (fast, antialiased).
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _to_rgb_image(image: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGB, by the same rules as `_to_rgb_array`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray((_to_rgb_array(image) * 255.0).round().astype(np.uint8), mode="RGB")
    return _flatten_alpha(image).convert("RGB")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image


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
    rgb = _flatten_alpha(image).convert("RGB")  # L, 1, CMYK, YCbCr, ... all have a defined conversion
    return np.asarray(rgb, dtype=np.float32) / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """3 x H x W in [0, 1] -> H x W x 3 uint8 (rounded)."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)


def encode_png(image: torch.Tensor | np.ndarray) -> bytes:
    """3 x H x W in [0, 1], or H x W x 3 uint8 -> PNG bytes (lossless, so a purified image is stored as computed)."""
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
