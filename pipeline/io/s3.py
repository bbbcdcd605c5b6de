"""S3 (and S3-compatible) access: URI parsing, clients, and copying objects to local disk.

Endpoints and credentials come from the standard AWS sources (environment, config files, instance
roles) or an explicit endpoint URL; nothing here prints or stores a credential.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, ResponseStreamingError

# Bounded retries with backoff for throttling, 5xx and connection resets (AWS_MAX_ATTEMPTS, the
# standard variable, overrides the count). botocore retries the request; a body that breaks off while
# streaming is retried by `read_s3_object`.
DEFAULT_MAX_ATTEMPTS = 8
BODY_ATTEMPTS = 4


def retry_config() -> Config:
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
    return Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=10, read_timeout=60)


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/key' -> ('bucket', 'some/key')."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; without `endpoint_url` boto3 reads AWS_ENDPOINT_URL(_S3) and config files."""
    # A session of its own: boto3's default session caches the first credentials it resolves for the
    # life of the process, and sessions are not thread-safe.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=retry_config())


def read_s3_object(client, uri: str) -> bytes:
    """The whole object; FileNotFoundError when it does not exist."""
    bucket, key = parse_s3_uri(uri)
    attempt = 1
    while True:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"no such object: {uri}") from error
            raise
        except (ResponseStreamingError, ConnectionError):
            if attempt == BODY_ATTEMPTS:
                raise
            time.sleep(0.5 * 2 ** (attempt - 1))
            attempt += 1


def _list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def fetch_to_cache(uri: str, cache_dir: str, *, endpoint_url: str | None = None, refresh: bool = False) -> str:
    """Copy an S3 object or prefix into `cache_dir` once and return the local path.

    A URI that names an object fetches exactly that object (never siblings that share its name as a
    prefix); otherwise every object below `<uri>/` is copied to a directory mirroring the keys. A key
    that would land outside the cache entry (`..`, empty or absolute parts) stops the fetch. The copy
    is made in a temporary directory and renamed into place, so an interrupted download is never
    mistaken for a complete one.
    """
    bucket, key = parse_s3_uri(uri.rstrip("/"))
    target = os.path.join(cache_dir, "s3", hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24])
    if os.path.isdir(target) and not refresh:
        return _payload(target)
    client = s3_client(endpoint_url)
    single = bool(key) and _object_exists(client, bucket, key)
    if single:
        files = {key: os.path.basename(key)}
    else:
        prefix = key + "/" if key else ""
        files = {k: _relative_path(k[len(prefix) :], uri) for k in _list_keys(client, bucket, prefix) if not k.endswith("/")}
    if not files:
        raise FileNotFoundError(f"nothing found at {uri}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".partial-")
    try:
        root = os.path.join(staging, "object" if single else "prefix")
        for k, relative in files.items():
            local = os.path.join(root, relative)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            client.download_file(bucket, k, local)
        if refresh and os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _payload(target)


def _object_exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _relative_path(relative: str, uri: str) -> str:
    """An object key below the fetched prefix as a path that stays inside the cache entry."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"refusing to cache {uri}: object key part {relative!r} would not stay inside the cache entry")
    return os.path.join(*parts)


def _payload(target: str) -> str:
    obj = os.path.join(target, "object")
    if os.path.isdir(obj):
        return os.path.join(obj, os.listdir(obj)[0])
    return os.path.join(target, "prefix")
