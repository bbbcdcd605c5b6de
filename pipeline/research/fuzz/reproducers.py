"""Shards that once broke the reader, each rebuilt byte by byte, with what the product must now do.

The first ones are the causes a structure-aware fuzzer found (5,000 shards, November 2026: 281
uncaught exceptions, 4 hangs); the rest came from this project's own fuzzer (`campaign.py`). Each
runs through the campaign's oracle in tests/research/fuzz/test_fuzz.py."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .craft import END, Header, Member, assemble, encode_image, padded, pax_member, picture, regular


@dataclass(frozen=True)
class Reproducer:
    build: Callable[[], bytes]
    keys: list[bytes]  # the verdict rows' keys, in order
    errors: set[bytes] = field(default_factory=set)  # keys whose row is an error
    problem: str | None = None  # words the manifest's problems must contain
    complete: bool = True


def _png(seed: int = 0) -> bytes:
    return encode_image(picture(np.random.default_rng(seed)), "PNG")


def _ok() -> Member:
    return regular(b"ok.png", _png())


def _with_pax(records: list[tuple[bytes, bytes]], name: bytes = b"x.png", data: bytes = b"abc") -> bytes:
    member = regular(name, data)
    member.before.append(pax_member(b"././@PaxHeader", records))
    return assemble([_ok(), member])


def _old_gnu_sparse() -> bytes:
    header = Header(b"x.png", 3, b"S", magic=b"ustar  \0", extra={386: b"%011o\0%011o\0" % (0, 3), 483: b"%011o\0" % (1 << 30)})
    return assemble([_ok(), Member(header, b"abc")])


def _negative_base256() -> bytes:
    return _ok().encode() + Header(b"x.png", -512).block() + END  # tarfile went back to this header forever


def _repeated_scans() -> bytes:
    jpeg = encode_image(Image.new("RGB", (512, 512), (9, 90, 200)), "JPEG", progressive=True)
    scans = [i for i in range(len(jpeg) - 1) if jpeg[i : i + 2] == b"\xff\xda"]
    end = jpeg.rfind(b"\xff\xd9")
    return assemble([_ok(), regular(b"scans.jpg", jpeg[:end] + jpeg[scans[-1] : end] * 3000 + jpeg[end:])])


def _strip_per_row() -> bytes:
    tiff = encode_image(Image.new("L", (1, 100_000), 7), "TIFF", tiffinfo={278: 1})
    return assemble([_ok(), regular(b"strips.tif", tiff)])


def _large_webp() -> bytes:
    return assemble([regular(b"large.webp", encode_image(Image.new("RGBA", (3000, 3000), (1, 2, 3, 4)), "WEBP"))])


def _names() -> bytes:
    return assemble([regular(b"", _png(1)), regular(b".json", b"{}"), regular(b"x/", _png(2)), regular(b"a\0b.png", _png(3)),
                     regular(b"a\0b.json", b"{}")])


def _nul_in_pax_path() -> bytes:
    member = regular(b"placeholder.png", _png(4))
    member.before.append(pax_member(b"././@PaxHeader", [(b"path", b"a\0b.png")]))
    return assemble([member, regular(b"a.json", b"{}")])


REPRODUCERS: dict[str, Reproducer] = {
    "sparse map not integers": Reproducer(
        lambda: _with_pax([(b"GNU.sparse.map", b"a,b"), (b"GNU.sparse.size", b"10")]), [b"ok"], problem="unreadable tar", complete=False),
    "sparse member claiming a gibibyte (PAX 0.1)": Reproducer(
        lambda: _with_pax([(b"GNU.sparse.map", b"0,3"), (b"GNU.sparse.size", b"1073741824")]), [b"ok", b"x"], errors={b"x"}),
    "sparse member claiming a gibibyte (PAX 1.0)": Reproducer(
        lambda: _with_pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.name", b"x.png"),
                           (b"GNU.sparse.realsize", b"1073741824")], data=padded(b"1\n0\n3\n") + b"abc"), [b"ok", b"x"], errors={b"x"}),
    "sparse member claiming a gibibyte (old GNU)": Reproducer(_old_gnu_sparse, [b"ok", b"x"], errors={b"x"}),
    "header charset declared binary": Reproducer(
        lambda: _with_pax([(b"hdrcharset", b"BINARY"), (b"path", b"caf\xe9.png")], data=_png(5)), [b"ok", b"caf\xe9"]),
    "negative PAX size": Reproducer(lambda: _with_pax([(b"size", b"-512")]), [b"ok"], problem="negative size", complete=False),
    "negative base-256 size": Reproducer(_negative_base256, [b"ok"], problem="negative size", complete=False),
    "GNU long name of a gibibyte": Reproducer(
        lambda: _ok().encode() + Header(b"././@LongLink", 1 << 30, b"L").block() + END, [b"ok"], problem="unreadable tar", complete=False),
    "json nested 100,000 deep": Reproducer(lambda: assemble([_ok(), regular(b"ok.json", b"[" * 100_000)]), [b"ok"]),
    "extension not UTF-8": Reproducer(lambda: assemble([regular(b"photo.caf\xe9.jpg", encode_image(picture(np.random.default_rng(6)), "JPEG"))]),
                                      [b"photo"]),
    # Found by this project's fuzzer (seed 1318 and four others of the first 10,000): the error message
    # names the member, and the verdict table's text columns must be valid UTF-8.
    "undecodable image under a name that is not UTF-8": Reproducer(lambda: assemble([regular(b"bad.caf\xe9.jpg", b"not a jpeg")]),
                                                                    [b"bad"], errors={b"bad"}),
    # A caption the tokenizer refused made its sample unexaminable, an error row that `--on-error keep` passes on.
    "caption with lone surrogates": Reproducer(
        lambda: assemble([regular(b"c.png", _png(7)), regular(b"c.json", b'{"caption": "\\ud800 \\udce9"}')]), [b"c"]),
    # A NUL in a USTAR name field ends the name there: "a\0b.png" and "a\0b.json" read as "a", twice.
    "empty, directory-like and NUL names": Reproducer(_names, [b"", b"x/", b"a"], errors={b"", b"x/", b"a"}, problem="unsafe to extract"),
    "NUL in a PAX path": Reproducer(_nul_in_pax_path, [b"a\0b", b"a"], errors={b"a"}, problem="unsafe to extract"),
    "TIFF with a strip per row": Reproducer(_strip_per_row, [b"ok", b"strips"], errors={b"strips"}),
    "progressive JPEG with 3,000 scans": Reproducer(_repeated_scans, [b"ok", b"scans"], errors={b"scans"}),
    "large WebP": Reproducer(_large_webp, [b"large"]),
    "gzip stream of nothing": Reproducer(lambda: gzip.compress(b""), [], problem="empty shard", complete=False),
}
