"""Tar archives byte by byte: headers whose every field the fuzzer chooses (tarfile's writer would
refuse most of what a hostile shard holds), PAX and GNU records, and the seed members it mutates."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

BLOCK = 512
END = b"\0" * (2 * BLOCK)


@dataclass
class Header:
    """The fields of a USTAR header as bytes, exactly as they will be written (no validation)."""

    name: bytes
    size: int | bytes = 0  # an int is written in octal (or base-256 when negative or too large); bytes as given
    typeflag: bytes = b"0"
    mode: bytes = b"0000644\0"
    linkname: bytes = b""
    magic: bytes = b"ustar\x0000"
    prefix: bytes = b""
    extra: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes written over the block (old GNU sparse fields)
    checksum: bytes | None = None  # None: the correct one

    def block(self) -> bytes:
        out = bytearray(BLOCK)
        out[0:100] = self.name[:100].ljust(100, b"\0")
        out[100:108] = self.mode[:8].ljust(8, b"\0")
        out[108:116] = out[116:124] = b"0000000\0"
        out[124:136] = size_field(self.size)
        out[136:148] = b"00000000000\0"
        out[156:157] = self.typeflag[:1] or b"\0"
        out[157:257] = self.linkname[:100].ljust(100, b"\0")
        out[257:265] = self.magic[:8].ljust(8, b"\0")
        out[345:500] = self.prefix[:155].ljust(155, b"\0")
        for offset, data in self.extra.items():
            out[offset : offset + len(data)] = data[: BLOCK - offset]
        out[148:156] = b" " * 8
        out[148:156] = self.checksum if self.checksum is not None else b"%06o\0 " % sum(out)
        return bytes(out)


def size_field(size: int | bytes) -> bytes:
    if isinstance(size, bytes):
        return size[:12].ljust(12, b"\0")
    if 0 <= size < 8**11:
        return b"%011o\0" % size
    return bytes([0xFF if size < 0 else 0x80]) + (size % 256**11).to_bytes(11, "big")  # base-256, two's complement


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def pax_body(records: list[tuple[bytes, bytes]]) -> bytes:
    """PAX records `LEN key=value\\n`, each LEN counting itself."""
    body = b""
    for key, value in records:
        record = b" " + key + b"=" + value + b"\n"
        length = len(record) + 1
        while len(str(length)) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    return body


@dataclass
class Member:
    """One member as the fuzzer assembles it: optional records before its header, its header, its data."""

    header: Header
    data: bytes = b""
    before: list[bytes] = field(default_factory=list)  # raw blocks written before the header (PAX / GNU long-name members)

    def encode(self) -> bytes:
        return b"".join(self.before) + self.header.block() + padded(self.data)


def regular(name: bytes, data: bytes) -> Member:
    """A regular file; a name over 100 bytes travels in a PAX `path` record, as tarfile writes it."""
    member = Member(Header(name[:100], len(data)), data)
    if len(name) > 100:
        member.before.append(pax_member(b"././@PaxHeader", [(b"path", name)]))
    return member


def pax_member(name: bytes, records: list[tuple[bytes, bytes]], typeflag: bytes = b"x") -> bytes:
    body = pax_body(records)
    return Header(name, len(body), typeflag).block() + padded(body)


def assemble(members: list[Member], end: bytes = END) -> bytes:
    return b"".join(m.encode() for m in members) + end


# --- seed samples: small, valid, one of each format the reader decodes -----------------------------------

def encode_image(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture(rng: np.random.Generator, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Image.Image:
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


SEED_FORMATS = (
    ("png", "PNG", {}), ("jpg", "JPEG", {"quality": 80}), ("jpeg", "JPEG", {"progressive": True}), ("webp", "WEBP", {}),
    ("gif", "GIF", {}), ("tiff", "TIFF", {}), ("bmp", "BMP", {}), ("ppm", "PPM", {}), ("tga", "TGA", {}),
)


def seed_members(rng: np.random.Generator, samples: int) -> list[tuple[bytes, bytes]]:
    """(name, payload) of `samples` valid samples: an image in a random format, a json and a caption each."""
    out = []
    for index in range(samples):
        ext, fmt, options = SEED_FORMATS[int(rng.integers(len(SEED_FORMATS)))]
        key = b"d%d/s%03d" % (index % 3, index)
        out.append((key + b"." + ext.encode(), encode_image(picture(rng), fmt, **options)))
        out.append((key + b".json", b'{"label": "shirt", "illusion": false}'))
        out.append((key + b".txt", b"a photo of a shirt."))
    return out
