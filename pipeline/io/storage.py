"""One small filesystem layer over local paths and S3 URIs: expand input specs, read and write bytes.

Writes are atomic: local files go through a temporary name and os.replace; S3 objects appear whole
when the PUT completes. So a reader never mistakes a partial output for a finished one.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import re
import tempfile

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError

from ..stops import RESUMABLY, OutputWriteError, StoreUnreachable
from .s3 import is_s3_uri, parse_s3_uri, read_s3_object, s3_client
from .shards import SHARD_SUFFIXES

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
# What botocore raises, after its retries, when the endpoint does not answer (refused, reset, timed out).
_UNREACHABLE = (S3ConnectionError, HTTPClientError)
__all__ = ["OutputWriteError", "Storage", "StoreUnreachable", "is_inside", "join", "shard_name"]


def _server_failure(error: ClientError) -> bool:
    """A 5xx answer that outlived the client's retries: the store is up but not serving (restarting, overloaded)."""
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


def _reachable(method):
    """Reads and listings: a store that cannot be reached, or answers only with server errors, is one
    StoreUnreachable naming the endpoint, not a traceback: every shard would fail the same way."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        where = self.s3_endpoint or "the AWS endpoint"
        try:
            return method(self, *args, **kwargs)
        except _UNREACHABLE as error:
            raise StoreUnreachable(f"the object store at {where} cannot be reached ({type(error).__name__}); {RESUMABLY}") from error
        except ClientError as error:
            if not _server_failure(error):
                raise
            code = error.response.get("Error", {}).get("Code", "server error")
            raise StoreUnreachable(f"the object store at {where} answers with server errors ({code}); {RESUMABLY}") from error

    return wrapped


class Storage:
    def __init__(self, s3_endpoint: str | None = None):
        self.s3_endpoint = s3_endpoint
        self._client = None

    @property
    def s3(self):
        if self._client is None:
            self._client = s3_client(self.s3_endpoint)
        return self._client

    # --- reading ------------------------------------------------------------------------------
    @_reachable
    def read_bytes(self, uri: str) -> bytes:
        if is_s3_uri(uri):
            return read_s3_object(self.s3, uri)
        with open(uri, "rb") as handle:
            return handle.read()

    @_reachable
    def exists(self, uri: str) -> bool:
        if is_s3_uri(uri):
            bucket, key = parse_s3_uri(uri)
            response = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
            return any(item["Key"] == key for item in response.get("Contents", []))
        return os.path.exists(uri)

    @_reachable
    def list_prefix(self, uri: str) -> list[str]:
        """Every object or file below a directory or prefix, sorted."""
        if is_s3_uri(uri):
            bucket, prefix = parse_s3_uri(uri)
            prefix = prefix.rstrip("/") + "/" if prefix else ""
            keys = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", [])]
            return sorted(keys)
        return sorted(os.path.join(root, name) for root, _, names in os.walk(uri) for name in names)

    # --- writing ------------------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write atomically; any failure is an OutputWriteError naming the output."""
        try:
            self._write(uri, data)
        except (OSError, BotoCoreError, ClientError) as error:
            raise OutputWriteError(f"cannot write {uri}: {_reason(error)} ({RESUMABLY})") from error

    def _write(self, uri: str, data: bytes) -> None:
        if is_s3_uri(uri):
            bucket, key = parse_s3_uri(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
            return
        directory = os.path.dirname(os.path.abspath(uri))
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a file written directly would follow the umask
            os.replace(temporary, uri)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    # --- specs --------------------------------------------------------------------------------
    def is_directory(self, spec: str) -> bool:
        """Whether SPEC names a directory or S3 prefix (rather than shards, a glob or a list file)."""
        if _is_pattern(spec) or spec.endswith(SHARD_SUFFIXES):
            return False
        return is_s3_uri(spec) or os.path.isdir(spec)

    @_reachable
    def expand(self, spec: str) -> list[str]:
        """Shard URIs named by SPEC: a directory or S3 prefix (every .tar, .tar.gz and .tgz below it), a
        glob, a brace range (shard-{000000..000099}.tar), or a local text file listing one URI per line.
        A spec that names no shard is an error (FileNotFoundError), never an empty run; a missing
        shard among others is reported with that shard's outputs."""
        single = spec.endswith(SHARD_SUFFIXES) and not _is_pattern(spec)
        if single and not is_s3_uri(spec) and not os.path.isfile(spec):
            raise FileNotFoundError(f"no such shard: {spec}")
        shards = self._expand(spec)
        if not any(is_s3_uri(u) or os.path.exists(u) for u in shards):  # a local range of absent files is a typo
            raise FileNotFoundError(f"no shards match {spec!r} (shards end in {', '.join(SHARD_SUFFIXES)})")
        return shards

    def _expand(self, spec: str) -> list[str]:
        match = _BRACE.search(spec)
        if match:
            first, last = match.group(1), match.group(2)
            width = len(first)
            names = [spec[: match.start()] + str(i).zfill(width) + spec[match.end() :] for i in range(int(first), int(last) + 1)]
            return [uri for name in names for uri in self._expand(name)]
        if _is_pattern(spec, braces=False):
            return self._glob(spec)
        if not is_s3_uri(spec) and os.path.isfile(spec) and not spec.endswith(SHARD_SUFFIXES):
            if _is_archive(spec):
                raise ValueError(f"{spec} is an archive, not a list of shards; shards end in {', '.join(SHARD_SUFFIXES)}")
            with open(spec, encoding="utf-8") as handle:
                return [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        if spec.endswith(SHARD_SUFFIXES):
            return [spec]  # a missing one is reported with the shard's outputs
        if not is_s3_uri(spec) and not os.path.isdir(spec):
            raise FileNotFoundError(f"no such file or directory: {spec}")
        return [uri for uri in self.list_prefix(spec) if uri.endswith(SHARD_SUFFIXES)]

    def _glob(self, pattern: str) -> list[str]:
        if not is_s3_uri(pattern):
            return sorted(glob.glob(pattern, recursive=True))
        static = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        base = static.rsplit("/", 1)[0]
        bucket, prefix = parse_s3_uri(base)
        candidates = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            candidates += [f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", [])]
        return sorted(uri for uri in candidates if fnmatch.fnmatchcase(uri, pattern))


def join(base: str, *parts: str) -> str:
    if is_s3_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def shard_name(uri: str) -> str:
    """'s3://b/c/shard-000001.tar' (or .tar.gz, .tgz) -> 'shard-000001'."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    for suffix in SHARD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_inside(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or lies below it (local paths resolved, S3 URIs compared as keys)."""
    if is_s3_uri(path) != is_s3_uri(directory):
        return False
    if not is_s3_uri(path):
        path, directory = os.path.realpath(path), os.path.realpath(directory)
    path, directory = path.rstrip("/"), directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def _is_pattern(spec: str, braces: bool = True) -> bool:
    """Whether SPEC is a glob (or, with `braces`, a brace range) rather than one path."""
    return any(ch in spec for ch in "*?[") or (braces and _BRACE.search(spec) is not None)


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', error)}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def _is_archive(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar" or b"\0" in head


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: do it once, and put it straight back
    os.umask(mask)
    return mask
