"""Structure-aware mutations of a WebDataset shard: tar headers, PAX and GNU records, sparse members,
names, image-format fields, json members, gzip wrappers. `fuzz_shard(seed)` is deterministic: the
same seed gives the same bytes and the same list of mutations applied."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .craft import END, Header, Member, assemble, encode_image, pax_body, pax_member, regular, seed_members

# --- interesting values ----------------------------------------------------------------------------------

SIZES = (-1, -512, -1024, -(1 << 40), 8**11 - 1, 1 << 40, 1 << 62)
SIZE_FIELDS = (b"12\x00abc", b"99999999999", b" ", b"\x80" + b"\xff" * 11, b"-1", b"0x10")
TYPEFLAGS = b"0123456789AgxLKSVMNDI\x00\xff"
NAMES = (b"", b"x/", b"a\x00b.png", b"caf\xe9-\xff.png", b"photo.caf\xe9.jpg", b"../../etc/x.png", b"/abs/y.png", b"./a/./b.png",
         b"...png", b".png", b"a" * 300 + b".png", b"d/", b"\xff", b"a.b.c.d.e.png", b"x/.json")
PAX_RECORDS = (
    (b"path", b"a\x00b.png"), (b"path", b""), (b"path", b"x/"), (b"path", b"caf\xe9.png"), (b"size", b"-512"), (b"size", b"-1"),
    (b"size", b"99999999999999999999"), (b"size", b"abc"), (b"GNU.sparse.map", b"a,b"), (b"GNU.sparse.map", b"0,10,20"),
    (b"GNU.sparse.map", b"0,1073741824"), (b"GNU.sparse.size", b"1073741824"), (b"GNU.sparse.size", b"x"),
    (b"GNU.sparse.realsize", b"1073741824"), (b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.minor", b"1"),
    (b"GNU.sparse.name", b"s.png"), (b"GNU.sparse.offset", b"7"), (b"GNU.sparse.numbytes", b"-3"), (b"hdrcharset", b"BINARY"),
    (b"linkpath", b"\xff\xfe"), (b"mtime", b"abc"), (b"uid", b"9" * 40), (b"path\xff", b"x"), (b"comment", b"\x00" * 64),
)
PAX_GARBAGE = (b"99999 path=x\n", b"5 a=b", b"0 =\n", b"12 path\n", b"-3 path=x\n", b"20 path=only-a-few\n", b"\xff\xff\n")


@dataclass
class Draft:
    members: list[Member]
    end: bytes = END
    applied: list[str] = field(default_factory=list)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _target(rng: np.random.Generator, draft: Draft) -> Member | None:
    return _pick(rng, draft.members) if draft.members else None


# --- tar-level mutations (on the draft's members) --------------------------------------------------------

def size_value(rng, draft):
    member = _target(rng, draft)
    if member:
        member.header.size = _pick(rng, SIZES) if rng.random() < 0.6 else _pick(rng, SIZE_FIELDS)


def size_off_by(rng, draft):
    member = _target(rng, draft)
    if member:
        member.header.size = max(0, len(member.data) + int(rng.integers(-600, 2000)))


def typeflag(rng, draft):
    member = _target(rng, draft)
    if member:
        member.header.typeflag = bytes([_pick(rng, TYPEFLAGS)])
        if member.header.typeflag in (b"1", b"2"):
            member.header.linkname = _pick(rng, NAMES)


def name(rng, draft):
    member = _target(rng, draft)
    if member:
        new = _pick(rng, NAMES)
        member.header.name = new[:100]
        member.before = [pax_member(b"././@PaxHeader", [(b"path", new)])] if len(new) > 100 else []


def checksum(rng, draft):
    member = _target(rng, draft)
    if member:
        member.header.checksum = _pick(rng, (b"0000000\0", b"\xff" * 8, b"        "))


def magic(rng, draft):
    member = _target(rng, draft)
    if member:
        member.header.magic = _pick(rng, (b"ustar  \0", b"\0" * 8, b"GNUtar \0", b"ustar\x00xx"))


def pax_records(rng, draft):
    member = _target(rng, draft)
    if member:
        records = [_pick(rng, PAX_RECORDS) for _ in range(int(rng.integers(1, 4)))]
        member.before.append(pax_member(b"././@PaxHeader", records, _pick(rng, (b"x", b"x", b"g"))))


def pax_garbage(rng, draft):
    member = _target(rng, draft)
    if member:
        body = _pick(rng, PAX_GARBAGE) + pax_body([_pick(rng, PAX_RECORDS)])
        member.before.append(Header(b"././@PaxHeader", len(body), b"x").block() + body.ljust(512 * (len(body) // 512 + 1), b"\0"))


def gnu_long(rng, draft):
    member = _target(rng, draft)
    if member:
        body = _pick(rng, NAMES) + b"\0"
        size = _pick(rng, (len(body), -512, 1 << 30, len(body) + 700))
        member.before.append(Header(b"././@LongLink", size, _pick(rng, (b"L", b"K"))).block() + body.ljust(512, b"\0"))


def old_gnu_sparse(rng, draft):
    """Type 'S': a sparse map in the header (offset, numbytes at 386) and the real size at 483."""
    member = _target(rng, draft)
    if member:
        stored = len(member.data)
        realsize = _pick(rng, (stored, 1 << 30, 8**11 - 1, stored + 1))
        member.header.typeflag, member.header.magic = b"S", b"ustar  \0"
        member.header.extra = {386: b"%011o\0%011o\0" % (0, stored), 482: bytes([int(rng.integers(2))]), 483: b"%011o\0" % realsize}


def pax_sparse_10(rng, draft):
    """PAX sparse 1.0: the map at the start of the data, the real size in a record."""
    member = _target(rng, draft)
    if member:
        realsize = _pick(rng, (b"1073741824", b"-5", b"abc", str(len(member.data)).encode()))
        entries = _pick(rng, (b"1\n0\n%d\n" % len(member.data), b"99999999\n", b"x\n", b"2\n0\n1\n"))
        member.data = entries.ljust(512, b"\0") + member.data
        member.header.size = len(member.data)
        member.before.append(pax_member(b"././@PaxHeader", [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                                                            (b"GNU.sparse.name", member.header.name), (b"GNU.sparse.realsize", realsize)]))


def reorder(rng, draft):
    if len(draft.members) >= 3:
        i, j = rng.choice(len(draft.members), 2, replace=False)
        draft.members[i], draft.members[j] = draft.members[j], draft.members[i]


def duplicate(rng, draft):
    member = _target(rng, draft)
    if member:
        copy = Member(Header(**{**vars(member.header), "extra": dict(member.header.extra)}), member.data, list(member.before))
        draft.members.insert(int(rng.integers(len(draft.members) + 1)), copy)


def end_marker(rng, draft):
    draft.end = _pick(rng, (b"", b"\0" * 512, END + b"garbage after the end", b"\0" * 1023, END + END))


TAR_MUTATIONS: dict[str, Callable] = {f.__name__: f for f in (
    size_value, size_off_by, typeflag, name, checksum, magic, pax_records, pax_garbage, gnu_long, old_gnu_sparse, pax_sparse_10,
    reorder, duplicate, end_marker)}


# --- payload mutations (image formats and json) ----------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_dimensions(rng, data: bytes) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    width, height = _pick(rng, ((1, 1 << 30), (9000, 8000), (65535, 65535), (0, 10), (8000, 7999), (1, 64_000_000)))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]


def png_chunks(rng, data: bytes) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    chunk = _pick(rng, (_png_chunk(b"tEXt", b"k\0" + b"v" * 1000), _png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (1 << 22))),
                        _png_chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * (1 << 20))), b"\x7f\xff\xff\xffIDAT"))
    return data[:33] + chunk * int(rng.integers(1, 200)) + data[33:]


def jpeg_scans(rng, data: bytes) -> bytes:
    """Repeat one scan of a (progressive) JPEG many times: each costs a pass over all coefficients."""
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    end = data.rfind(b"\xff\xd9")
    if not starts or end < 0:
        return data
    k = int(rng.integers(len(starts)))
    scan = data[starts[k] : starts[k + 1] if k + 1 < len(starts) else end]
    return data[:end] + scan * int(rng.integers(50, 5000)) + data[end:]


def jpeg_dimensions(rng, data: bytes) -> bytes:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            height, width = _pick(rng, ((65535, 65535), (0, 0), (8000, 8000), (1, 65535)))
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    return data


def tiff_strips(rng, data: bytes) -> bytes:
    """A tall TIFF stored one row per strip (a call per strip when decoded)."""
    height = int(rng.integers(50_000, 300_000))
    return encode_image(Image.new("L", (1, height), 7), "TIFF", tiffinfo={278: 1})


def webp_dimensions(rng, data: bytes) -> bytes:
    if data[:4] != b"RIFF" or len(data) < 30:
        return data
    out = bytearray(data)
    out[26:30] = struct.pack("<HH", 0x3FFF, 0x3FFF) if rng.random() < 0.5 else bytes(rng.integers(0, 256, 4, dtype=np.uint8))
    return bytes(out)


def gif_dimensions(rng, data: bytes) -> bytes:
    if data[:3] != b"GIF":
        return data
    return data[:6] + struct.pack("<HH", 65535, 65535) + data[10:]


def big_image(rng, data: bytes) -> bytes:
    """A large but legitimate image (within the pixel limit): costs real decoding time and memory."""
    fmt = _pick(rng, ("PNG", "WEBP", "TIFF", "GIF"))
    size = _pick(rng, ((3000, 3000), (7000, 5000), (16000, 300)))
    image = Image.new("RGBA" if fmt != "GIF" else "P", size, 3 if fmt == "GIF" else (1, 2, 3, 4))
    return encode_image(image, fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))


def byte_flips(rng, data: bytes) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 16))):
        out[int(rng.integers(len(out)))] = int(rng.integers(256))
    return bytes(out)


def truncated(rng, data: bytes) -> bytes:
    return data[: int(rng.integers(len(data) + 1))]


def json_payload(rng, data: bytes) -> bytes:
    return _pick(rng, (b"[" * 100_000, b"{" * 50_000, b'{"illusion": ' * 30_000, b'{"caption": "\xff\xfe"}', b"1e99999",
                       b'{"label": [], "illusion": "yes", "caption": 7}', b"\x00" * 100))


IMAGE_MUTATIONS: dict[str, Callable] = {f.__name__: f for f in (
    png_dimensions, png_chunks, jpeg_scans, jpeg_dimensions, tiff_strips, webp_dimensions, gif_dimensions, big_image, byte_flips, truncated)}


# --- whole-shard byte mutations ------------------------------------------------------------------------

def cut(rng, data: bytes) -> bytes:
    return data[: int(rng.integers(len(data) + 1))]


def header_flips(rng, data: bytes) -> bytes:
    out = bytearray(data)
    blocks = max(1, len(out) // 512)
    for _ in range(int(rng.integers(1, 8))):
        block = int(rng.integers(blocks))
        position = block * 512 + int(rng.integers(min(512, max(1, len(out) - block * 512))))
        if position < len(out):
            out[position] = int(rng.integers(256))
    return bytes(out)


def gzipped(rng, data: bytes) -> bytes:
    kind = int(rng.integers(5))
    if kind == 0:
        return gzip.compress(data, mtime=0)
    if kind == 1:
        whole = gzip.compress(data, mtime=0)
        return whole[: int(rng.integers(10, len(whole) + 1))]
    if kind == 2:
        half = len(data) // 2
        return gzip.compress(data[:half], mtime=0) + gzip.compress(data[half:], mtime=0)
    if kind == 3:
        return gzip.compress(b"", mtime=0)
    return gzip.compress(data, mtime=0) + b"trailing garbage"


BYTE_MUTATIONS: dict[str, Callable] = {f.__name__: f for f in (cut, header_flips, gzipped)}


def fuzz_shard(seed: int) -> tuple[bytes, list[str]]:
    """One fuzzed shard: a few valid samples, then one to four mutations of the kinds above (tar
    structure, a member's payload, or the shard's bytes once assembled)."""
    rng = np.random.default_rng(seed)
    draft = Draft([regular(name, payload) for name, payload in seed_members(rng, int(rng.integers(1, 6)))])
    afterwards = []
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.random()
        if kind < 0.45:
            mutation = _pick(rng, list(TAR_MUTATIONS))
            TAR_MUTATIONS[mutation](rng, draft)
        elif kind < 0.8 and draft.members:
            member = _target(rng, draft)
            mutation = "json_payload" if member.header.name.endswith(b".json") else _pick(rng, list(IMAGE_MUTATIONS))
            member.data = json_payload(rng, member.data) if mutation == "json_payload" else IMAGE_MUTATIONS[mutation](rng, member.data)
            if isinstance(member.header.size, int) and member.header.size >= 0:
                member.header.size = len(member.data)
        else:
            mutation = _pick(rng, list(BYTE_MUTATIONS))
            afterwards.append(mutation)
        draft.applied.append(mutation)
    data = assemble(draft.members, draft.end)
    for mutation in afterwards:
        data = BYTE_MUTATIONS[mutation](rng, data)
    return data, draft.applied


def valid_shard(seed: int) -> bytes:
    """The seed samples without mutation."""
    rng = np.random.default_rng(seed)
    return assemble([regular(name, payload) for name, payload in seed_members(rng, int(rng.integers(1, 6)))])
