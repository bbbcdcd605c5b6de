"""A hostile corpus: every case of "bad input gets a clear error and loses nothing" in a few small shards.

`hostile_corpus()` returns {shard file name: bytes} and `EXPECTED` says, per shard, which keys a
reader must report (one verdict row each) and what the manifest must name.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
from PIL import Image

TINY_CAP = 1 << 20  # --max-shard-bytes for runs over this corpus: bomb.tar.gz decompresses past it


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _member(archive: tarfile.TarFile, name: str | bytes, payload: bytes | None = None, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name)
    info.type, info.linkname = kind, link
    info.size = len(payload) if payload is not None else 0
    archive.addfile(info, io.BytesIO(payload) if payload is not None else None)


def _tar(members: list[tuple]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as archive:
        for member in members:
            _member(archive, *member)
    return buffer.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
LONG = "scraped-" + "x" * 140  # a base name USTAR cannot hold
NON_UTF8 = b"caf\xe9-\xff\xfe"


def hostile_corpus() -> dict[str, bytes]:
    png = encoded(picture(0), "PNG")
    mixed = _tar([
        ("ok-0.png", png), ("ok-0.txt", b"a photo of a shirt."),
        (NON_UTF8 + b".png", encoded(picture(1), "PNG")),
        (LONG + ".png", encoded(picture(2), "PNG")),
        ("two.png", encoded(picture(3), "PNG")), ("two.jpg", encoded(picture(4), "JPEG")),
        ("jpe.jpe", encoded(picture(5), "JPEG")), ("jfif.jfif", encoded(picture(6), "JPEG")),
        ("tga.tga", encoded(picture(7), "TGA")), ("ico.ico", encoded(picture(8, (32, 32)), "ICO")),
        ("pnm.pnm", encoded(picture(9), "PPM")), ("apng.apng", encoded(picture(10), "PNG")),
        ("eps-as-png.png", EPS), ("eps.eps", EPS),
        ("bad.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"),
        ("overlimit.png", encoded(Image.new("L", (9000, 8000)), "PNG")),  # 72 M pixels > 64 M, a few KB
        ("link.png", None, tarfile.SYMTYPE, "ok-0.png"), ("hard.png", None, tarfile.LNKTYPE, "ok-0.png"),
        ("fifo.png", None, tarfile.FIFOTYPE), ("dev.png", None, tarfile.CHRTYPE),
        ("dup.png", encoded(picture(11), "PNG")), ("dup.png", encoded(picture(12), "PNG")),
        ("rep.png", encoded(picture(13), "PNG")), ("between.png", encoded(picture(14), "PNG")), ("rep.txt", b"late caption"),
        ("../../escape.png", encoded(picture(15), "PNG")), ("/abs/rooted.png", encoded(picture(16), "PNG")),
        ("textonly.txt", b"no image here"),
    ])
    huge = _tar([
        ("square.png", encoded(Image.new("RGB", (4000, 4000), (90, 20, 200)), "PNG")),  # about 24 KB
        ("strip.png", encoded(Image.new("RGB", (250_000, 8), (20, 200, 90)), "PNG")),
        ("big.jpg", encoded(Image.new("RGB", (6000, 4000), (200, 90, 20)), "JPEG")),
    ])
    plain = _tar([("g-0.png", encoded(picture(20), "PNG")), ("g-1.png", encoded(picture(21), "PNG"))])
    return {
        "mixed.tar": mixed,
        "huge.tar": huge,
        "gz.tar.gz": gzip.compress(plain),
        "bomb.tgz": gzip.compress(_tar([("zeros.png", bytes(2 * TINY_CAP))])),
        "truncated.tar": plain[: len(plain) // 2],
        "empty.tar": b"",
        "nottar.tar": b"these bytes are not a tar archive\n" * 64,
    }


# Per shard: the keys (as bytes) with a verdict row, and words each of its problems must contain;
# `complete`: whether the manifest marks the shard done (False: the next run retries it).
MIXED_KEYS = [b"ok-0", NON_UTF8, LONG.encode(), b"two", b"jpe", b"jfif", b"tga", b"ico", b"pnm", b"apng", b"eps-as-png", b"eps",
              b"bad", b"overlimit", b"link", b"hard", b"fifo", b"dev", b"dup", b"rep", b"between", b"../../escape", b"/abs/rooted",
              b"textonly"]
EXPECTED = {
    "mixed": {"keys": MIXED_KEYS, "problems": ["unsafe to extract"], "complete": True,
              "errors": {b"eps-as-png", b"eps", b"bad", b"overlimit", b"link", b"hard", b"fifo", b"dev", b"dup", b"rep", b"textonly"}},
    "huge": {"keys": [b"square", b"strip", b"big"], "problems": [], "complete": True, "errors": set()},
    "gz": {"keys": [b"g-0", b"g-1"], "problems": [], "complete": True, "errors": set()},
    "bomb": {"keys": [], "problems": ["the cap"], "complete": False, "errors": set()},
    "truncated": {"keys": [b"g-0"], "problems": ["unreadable tar"], "complete": False, "errors": set()},
    "empty": {"keys": [], "problems": ["empty shard"], "complete": False, "errors": set()},
    "nottar": {"keys": [], "problems": ["unreadable tar"], "complete": False, "errors": set()},
}
