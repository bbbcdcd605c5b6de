import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io.images import ImageDecodeError, decode_image, decode_working, encode_png


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_rgb_png_round_trip():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = decode_image(encoded(Image.fromarray(array)))
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert decode_image(encode_png(tensor)).mul(255).round().byte().permute(1, 2, 0).numpy().tolist() == array.tolist()


@pytest.mark.parametrize(
    "mode, fmt, expect",
    [
        ("L", "PNG", (0.5, 0.5, 0.5)),
        ("CMYK", "JPEG", None),
        ("P", "PNG", None),
        ("RGBA", "PNG", (1.0, 1.0, 1.0)),  # fully transparent -> white background
        ("LA", "PNG", (1.0, 1.0, 1.0)),
    ],
)
def test_modes_decode_to_rgb(mode, fmt, expect):
    if mode == "L":
        image = Image.new("L", (4, 3), 128)
    elif mode == "CMYK":
        image = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # red
    elif mode == "P":
        image = Image.new("RGB", (4, 3), (0, 0, 255)).convert("P")
    else:
        image = Image.new(mode, (4, 3), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    tensor = decode_image(encoded(image, fmt))
    assert tensor.shape == (3, 3, 4)
    if expect:
        torch.testing.assert_close(tensor[:, 0, 0], torch.tensor(expect), atol=0.01, rtol=0)
    if mode == "CMYK":
        assert tensor[0].mean() > 0.8 and tensor[1].mean() < 0.2
    if mode == "P":
        assert tensor[2].mean() > 0.9


def test_sixteen_bit_grayscale():
    array = np.full((3, 4), 65535 // 4, dtype=np.uint16)
    tensor = decode_image(encoded(Image.fromarray(array)))
    torch.testing.assert_close(tensor[:, 0, 0], torch.full((3,), 0.25), atol=0.01, rtol=0)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "zero bytes"),
        (b"this is plain text, not an image", "not an image in a decoded format"),
        (encoded(Image.new("RGB", (64, 64), (10, 20, 30)))[:60], "cannot decode"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_pixel_limit():
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(encoded(Image.new("RGB", (100, 100))), max_pixels=5000)


def test_working_geometry_is_shorter_side_then_centre_crop():
    # Left half black, right half white, 40 x 20: the central 20 x 20 crop straddles the edge.
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, 20:] = 255
    out = decode_working(encoded(Image.fromarray(array)), 10)
    assert out.pixels.shape == (10, 10, 3) and out.pixels.dtype == np.uint8 and out.original_size == (40, 20)
    assert out.pixels[:, :3].max() < 40 and out.pixels[:, -3:].min() > 215  # the crop is centred
    tall = decode_working(encoded(Image.new("RGB", (6, 50), (9, 99, 199))), 12)  # small images are enlarged
    assert tall.pixels.shape == (12, 12, 3) and tall.pixels[6, 6].tolist() == [9, 99, 199]


@pytest.mark.parametrize("size", [(4000, 3000), (250_000, 8)])
def test_huge_and_narrow_inputs_cost_their_working_size(size):
    fmt = "JPEG" if size[1] > 8 else "PNG"  # JPEG decodes at a reduced DCT scale; the strip is resampled in its crop only
    image = Image.new("RGB", size, (200, 30, 30))
    out = decode_working(encoded(image, fmt), 32)
    assert out.pixels.shape == (32, 32, 3) and out.original_size == size
    assert abs(int(out.pixels[16, 16, 0]) - 200) < 8


def test_working_geometry_keeps_the_modes_and_errors_of_full_decoding():
    assert decode_working(encoded(Image.new("RGBA", (8, 8), (0, 0, 0, 0))), 4).pixels[0, 0].tolist() == [255, 255, 255]
    assert decode_working(encoded(Image.fromarray(np.full((8, 8), 65535 // 4, dtype=np.uint16))), 4).pixels[0, 0].tolist() == [64] * 3
    cmyk = decode_working(encoded(Image.new("CMYK", (9, 9), (0, 255, 255, 0)), "JPEG"), 4).pixels
    assert cmyk[..., 0].min() > 200 and cmyk[..., 1].max() < 60
    with pytest.raises(ImageDecodeError, match="zero bytes"):
        decode_working(b"", 8)
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_working(encoded(Image.new("RGB", (100, 100))), 8, max_pixels=5000)


MEASURE = """
import sys
from pipeline.io.images import decode_working

def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # peak RSS from here on (imports excluded)
before = status("VmRSS")
decode_working(data, 224)
print(status("VmHWM") - before)
"""


def _sixteen_bit(size):
    return Image.fromarray(np.full((size[1], size[0]), 30000, dtype=np.uint16))


@pytest.mark.parametrize("fmt, mode, size", [
    ("PNG", "RGBA", (4000, 4000)), ("PNG", "P", (4000, 4000)), ("PNG", "I;16", (4000, 4000)), ("PNG", "RGB", (250_000, 8)),
    ("JPEG", "RGB", (6000, 4000)), ("WEBP", "RGBA", (3000, 3000)), ("WEBP", "RGB", (3000, 3000)), ("GIF", "RGB", (3000, 3000)),
    ("TIFF", "RGBA", (3000, 3000)), ("TIFF", "I;16", (3000, 3000)), ("TGA", "RGBA", (3000, 3000)), ("BMP", "RGB", (3000, 3000)),
    ("PPM", "RGB", (3000, 3000)), ("ICO", "RGBA", (256, 256)),
])
def test_decode_memory_is_bounded_per_stored_pixel(tmp_path, fmt, mode, size):
    """The documented bound (`decode_bytes_per_pixel` per pixel of the stored image, plus a fixed
    part), measured as peak resident memory in a fresh process, on every decoded format in its worst
    modes. (ru_maxrss would not do: a child of a larger process inherits its parent's peak.)"""
    import subprocess
    import sys

    from pipeline.io.images import DECODE_FIXED_BYTES, decode_bytes_per_pixel

    image = _sixteen_bit(size) if mode == "I;16" else Image.new(mode, size, (9,) * len(mode))
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(encoded(image, fmt))
    rise = int(subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True).stdout)
    assert rise <= decode_bytes_per_pixel(fmt) * size[0] * size[1] + DECODE_FIXED_BYTES


def test_only_the_decoded_formats_ever_parse_corpus_bytes(monkeypatch):
    from PIL import EpsImagePlugin

    def never(*args, **kwargs):
        raise AssertionError("the EPS plugin ran on corpus bytes")

    monkeypatch.setattr(EpsImagePlugin, "EpsImageFile", never)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="not an image in a decoded format"):
        decode_working(eps, 32)
    for fmt in ("TGA", "ICO", "PPM", "BMP", "GIF", "TIFF", "WEBP"):
        assert decode_working(encoded(Image.new("RGB", (40, 30), (1, 2, 3)), fmt), 32).pixels.shape == (32, 32, 3)


def test_image_extensions_cover_what_webdataset_decodes():
    from webdataset.autodecode import IMAGE_EXTENSIONS as WEBDATASET

    from pipeline.io.images import IMAGE_EXTENSIONS

    assert set(WEBDATASET) <= IMAGE_EXTENSIONS and {"jpe", "jfif", "apng", "pnm", "tga", "ico"} <= IMAGE_EXTENSIONS
