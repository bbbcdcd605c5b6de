"""WebDataset shards as raw bytes: tar members grouped into samples by key, and back.

A member `dir/abc.001.png` belongs to sample key `dir/abc` with extension `001.png` (the key ends at
the first dot of the base name, as in WebDataset). Members of one sample are adjacent in a well-formed
shard; a key that reappears later is reported as a duplicate instead of being merged silently.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm")


@dataclass
class Sample:
    key: str
    members: dict[str, bytes] = field(default_factory=dict)  # extension -> bytes, in tar order

    def image_extension(self) -> str | None:
        for ext in self.members:
            if ext.lower().rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
                return ext
        return None


@dataclass
class ShardProblem:
    """Something wrong with the shard itself rather than with one sample (e.g. a truncated tar)."""

    message: str


def split_member_name(name: str) -> tuple[str, str]:
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, ext if dot else ""


def read_samples(data: bytes) -> Iterator[Sample | ShardProblem]:
    """Samples in shard order. A truncated or corrupt tar yields the samples read so far, then a
    ShardProblem; a key that reappears after other keys yields a ShardProblem and its repeat is skipped."""
    seen: set[str] = set()
    current: Sample | None = None
    skipping: str | None = None  # key of a repeated group being skipped
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = split_member_name(member.name)
                if key == skipping:
                    continue
                if current is not None and key == current.key:
                    current.members[ext] = archive.extractfile(member).read()
                    continue
                if current is not None:
                    yield current
                    current = None
                if key in seen:
                    skipping = key
                    yield ShardProblem(f"duplicate key {key!r}: its members are not adjacent; the repeat was skipped")
                    continue
                skipping = None
                seen.add(key)
                current = Sample(key, {ext: archive.extractfile(member).read()})
            # tarfile stops quietly at a cut-off header; a complete tar ends in two zero blocks.
            tail = data[archive.offset :]
            if len(tail) < 1024 or tail.strip(b"\0"):
                raise tarfile.ReadError("truncated: no end-of-archive marker after the last complete member")
    except (tarfile.TarError, EOFError, OSError) as error:
        if current is not None:
            yield current
        yield ShardProblem(f"unreadable tar: {type(error).__name__}: {error}")
        return
    if current is not None:
        yield current


def write_samples(samples: Iterable[Sample]) -> bytes:
    """A tar with each sample's members adjacent, in the given order, with deterministic headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for sample in samples:
            for ext, payload in sample.members.items():
                info = tarfile.TarInfo(f"{sample.key}.{ext}" if ext else sample.key)
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()
