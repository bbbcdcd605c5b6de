"""WebDataset shards as raw bytes: tar members grouped into samples by key, and back.

A member `dir/abc.001.png` belongs to sample key `dir/abc` with extension `001.png` (the key ends at
the first dot of the base name, as in WebDataset). Reading is lossless and never raises for bad
input; what cannot be used becomes a sample error or a shard problem:

- Names are decoded as UTF-8 with `surrogateescape`, so a name that is not valid UTF-8 survives the
  round trip byte for byte (`key_bytes`); `display` gives its printable form.
- Only regular files carry data. A link, device or fifo member makes its sample an error.
- A member whose name was already seen (an adjacent duplicate, or a key that reappears after other
  keys) is kept aside in `Sample.extra` and makes its sample an error: one sample per key, nothing lost.
- Plain and gzip-compressed tars are read; decompression stops at a cap. Other compressions, empty
  or truncated data are shard problems that leave the shard incomplete (retried by the next run).

Writing uses the PAX format (any name that was readable is writable) with deterministic headers, and
names that could escape an extraction directory (absolute, `..`) are written in a safe form.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .images import IMAGE_EXTENSIONS

DEFAULT_MAX_SHARD_BYTES = 2 << 30  # decompressed size at most: a gzip bomb stops here
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_OTHER_COMPRESSIONS = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass
class Sample:
    key: str
    members: dict[str, bytes] = field(default_factory=dict)  # extension -> bytes, in tar order
    extra: list[tuple[str, bytes]] = field(default_factory=list)  # repeated member names, written back as read
    errors: list[str] = field(default_factory=list)  # why the sample cannot be examined as it stands

    def image_extensions(self) -> list[str]:
        """Every member a WebDataset or Pillow loader would decode as an image, in tar order."""
        return [ext for ext in self.members if is_image_extension(ext)]

    def image_extension(self) -> str | None:
        images = self.image_extensions()
        return images[0] if images else None


@dataclass
class ShardProblem:
    """Something wrong with the shard itself rather than with one sample (e.g. a truncated tar).
    `incomplete`: the shard's bytes were not all read, so the next run tries it again."""

    message: str
    incomplete: bool = False


def is_image_extension(ext: str) -> bool:
    return ext.lower().rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def split_member_name(name: str) -> tuple[str, str]:
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, ext if dot else ""


def key_bytes(key: str) -> bytes:
    """The exact bytes of a name as stored in the tar."""
    return key.encode("utf-8", "surrogateescape")


def display(name: str) -> str:
    """A name as valid UTF-8 text: bytes that are not UTF-8 shown as \\xNN (for messages and text
    columns); any other lone surrogate (from a JSON escape, say) as \\uXXXX."""
    try:
        return key_bytes(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def as_text(value):
    """Any string as valid UTF-8 text (`display`); anything else as it is."""
    return display(value) if isinstance(value, str) else value


def safe_key(key: str) -> str:
    """A key whose members stay inside any directory they are extracted to, and stay one sample when
    read back: no leading '/', no '.' or empty components, each '..' written as '__', NUL (which ends
    a name in a tar header) as '_', and '_' as the base name where the key's own is empty."""
    parts = ["__" if part == ".." else part.replace("\0", "_") for part in key.split("/")]
    base = parts.pop()
    kept = [part for part in parts if part not in ("", ".")]
    return "/".join([*kept, base if base not in ("", ".") else "_"])


def plain_tar(data: bytes, max_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> tuple[bytes, ShardProblem | None]:
    """Shard bytes as an uncompressed tar: gzip is decompressed up to `max_bytes`."""
    if not data:
        return b"", ShardProblem("empty shard (0 bytes)", incomplete=True)
    if data[:2] == b"\x1f\x8b":
        tar, problem = _gunzip(data, max_bytes)
        if not tar and not problem:
            return b"", ShardProblem("empty shard (a gzip stream of 0 bytes)", incomplete=True)
        return tar, problem
    for magic, name in _OTHER_COMPRESSIONS.items():
        if data.startswith(magic):
            return b"", ShardProblem(f"{name}-compressed shard: only plain and gzip-compressed tars are read", incomplete=True)
    return data, None


def _gunzip(data: bytes, max_bytes: int) -> tuple[bytes, ShardProblem | None]:
    out, remaining = bytearray(), data
    try:
        while remaining:  # a gzip file may hold several members back to back
            stream = zlib.decompressobj(wbits=31)
            chunk = stream.decompress(remaining, max_bytes + 1 - len(out))
            out += chunk
            while stream.unconsumed_tail and len(out) <= max_bytes:
                out += stream.decompress(stream.unconsumed_tail, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                return b"", ShardProblem(f"gzip shard decompresses to more than {max_bytes} bytes (the cap); not read", incomplete=True)
            if not stream.eof:
                return bytes(out), ShardProblem("truncated gzip stream", incomplete=True)
            remaining = stream.unused_data.lstrip(b"\0")
    except zlib.error as error:
        return bytes(out), ShardProblem(f"corrupt gzip stream: {error}", incomplete=True)
    return bytes(out), None


@dataclass
class RawMember:
    """A tar member as the walk over headers found it: a regular file's bytes, or why there are none."""

    name: str
    payload: bytes | None
    refused: str | None = None  # why the payload was not read (a link, a device, a sparse member)


def walk_tar(tar: bytes) -> Iterator[RawMember | ShardProblem]:
    """Every member of an uncompressed tar in order, then what is wrong with the tar; never raises.

    Python's tarfile raises many kinds of exception on crafted headers (malformed PAX and GNU sparse
    records, undecodable header charsets, absurd sizes), and follows a negative member size back to
    a header it has read, forever; the walk stops there with a problem instead. Memory is bounded by
    the stored bytes: a sparse member (which may claim any size in a few bytes) is refused unread.
    Time is not bounded here: a walk over a crafted shard runs in `pipeline.io.sandbox`."""
    if not tar:
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:", **ENCODING) as archive:
            last = -1  # every header must start after the one before
            for member in archive:
                if member.size < 0:
                    raise tarfile.ReadError(f"the header at byte {member.offset} declares a negative size ({member.size})")
                if member.offset <= last:
                    raise tarfile.ReadError(f"a header leads back to byte {member.offset}, already read")
                last = member.offset
                if member.isdir():
                    continue
                if member.issparse():
                    yield RawMember(member.name, None, f"a sparse member (claiming {member.size} bytes)")
                elif member.isfile():
                    yield RawMember(member.name, archive.extractfile(member).read())
                else:
                    yield RawMember(member.name, None, _kind(member))
            # tarfile stops quietly at a cut-off header; a complete tar ends in two zero blocks.
            tail = tar[archive.offset :]
            if len(tail) < 1024 or tail.strip(b"\0"):
                raise tarfile.ReadError("truncated: no end-of-archive marker after the last complete member")
    except MemoryError:
        yield ShardProblem("unreadable tar: reading it needs more memory than its budget", incomplete=True)
    except Exception as error:  # tarfile raises ValueError, UnicodeDecodeError, OverflowError, IndexError, ... on crafted headers
        yield ShardProblem(f"unreadable tar: {type(error).__name__}: {_short(error)}", incomplete=True)


def group_members(walked: Iterable[RawMember | ShardProblem]) -> tuple[list[Sample], list[ShardProblem]]:
    """Members grouped into samples by key, in shard order (see the module's docstring)."""
    problems: list[ShardProblem] = []
    samples: dict[str, Sample] = {}
    previous: str | None = None
    for item in walked:
        if isinstance(item, ShardProblem):
            problems.append(item)
            continue
        key, ext = split_member_name(item.name)
        if key in samples and key != previous:
            _once(samples[key].errors, "the key reappears after other keys (its members are not adjacent)")
        sample = samples.setdefault(key, Sample(key))
        previous = key
        if item.payload is None:
            sample.errors.append(f"member {display(item.name)!r} is {item.refused}; only regular files are read")
        elif ext in sample.members:
            sample.extra.append((ext, item.payload))
            _once(sample.errors, f"member {display(item.name)!r} appears more than once (repeats kept aside, unexamined)")
        else:
            sample.members[ext] = item.payload
    unsafe = [display(k) for k in samples if safe_key(k) != k]
    if unsafe:
        problems.append(ShardProblem(f"{len(unsafe)} key(s) unsafe to extract as named (absolute, with '..', '.' or empty "
                                     f"parts, or a NUL; e.g. {unsafe[0]!r}): written with '..' as '__', without a leading '/' "
                                     "or '.' parts, NUL as '_', and '_' as the name of a key that ends in '/'"))
    return list(samples.values()), problems


Walk = Callable[[bytes], Iterable[RawMember | ShardProblem]]


def read_shard_bytes(tar: bytes, walk: Walk = walk_tar) -> tuple[list[Sample], list[ShardProblem]]:
    """Every sample of an uncompressed tar (see `plain_tar`), in shard order, and what is wrong with
    it. `walk`: the walk over the tar's headers (`walk_tar` in this process, or a sandboxed one)."""
    return group_members(walk(tar))


def _short(error: BaseException, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."


def _once(messages: list[str], message: str) -> None:
    if message not in messages:
        messages.append(message)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link to {display(member.linkname)!r}"
    if member.islnk():
        return f"a hard link to {display(member.linkname)!r}"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return f"a member of tar type {member.type!r}"


def parse(data: bytes, max_bytes: int = DEFAULT_MAX_SHARD_BYTES, walk: Walk = walk_tar) -> tuple[bytes, list[Sample], list[ShardProblem]]:
    """Shard bytes as read -> (the shard as an uncompressed tar, its samples, its problems)."""
    tar, problem = plain_tar(data, max_bytes)
    samples, problems = read_shard_bytes(tar, walk)
    return tar, samples, ([problem] if problem else []) + problems


def read_samples(data: bytes, max_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Iterator[Sample | ShardProblem]:
    """Samples in shard order, then the shard's problems."""
    _, samples, problems = parse(data, max_bytes)
    yield from samples
    yield from problems


def write_samples(samples: Iterable[Sample]) -> bytes:
    """A tar (PAX format) with each sample's members adjacent, in the given order, deterministic headers
    and keys made safe to extract (`safe_key`): every member of a sample is written under one key."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, **ENCODING) as archive:
        for sample in samples:
            key = safe_key(sample.key)
            for ext, payload in [*sample.members.items(), *sample.extra]:
                ext = ext.replace("\0", "_")
                info = tarfile.TarInfo(f"{key}.{ext}" if ext else key)
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()
