"""Run storage: a local folder or an ``s3://bucket/prefix`` on any S3-compatible server.

Endpoint and credentials come from the standard AWS variables, which boto3 reads itself
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``,
``AWS_DEFAULT_REGION``); with an endpoint set, requests use path-style addressing so self-hosted servers
(SeaweedFS, MinIO, Ceph…) work. Retries and timeouts are bounded: an unreachable endpoint fails in seconds.

``materialize`` turns a location into something local libraries can open: a local path or hub id comes back
as given; an ``s3://`` location is mirrored into a cache folder (``$VLSA_CACHE_DIR`` or
``~/.cache/vlsa-platform``, under ``s3/<bucket>/<key>``), downloading only the objects whose size or ETag
changed since the last call. Errors are :class:`StorageError` subclasses whose message names the location.

boto3 is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO, TypeAlias, TypeGuard

from . import durable

S3Client: TypeAlias = Any
"""A boto3 S3 client (``boto3.client("s3")``), as made by :func:`s3_client`."""

__all__ = [
    "AccessDeniedError",
    "NotFoundError",
    "StorageError",
    "arrow_filesystem",
    "create_exclusive",
    "default_cache_dir",
    "delete",
    "exists",
    "is_s3",
    "join",
    "materialize",
    "open_text",
    "parse_s3",
    "read_bytes",
    "read_text",
    "read_versioned",
    "replace_if",
    "s3_client",
    "upload_dir",
    "upload_file",
    "write_text",
]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "VLSA_CACHE_DIR"
"""Environment variable naming the cache root (default ``~/.cache/vlsa-platform``)."""

_SCHEME = "s3://"
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_STATE_DIR = ".state"  # under <root>/s3/; no bucket name starts with a dot
_MAX_WORKERS = 8


class StorageError(OSError):
    """A storage operation failed; the message names the location."""


class NotFoundError(StorageError, FileNotFoundError):
    """The bucket, object or prefix does not exist (or holds no objects)."""


class AccessDeniedError(StorageError, PermissionError):
    """The server refused the credentials or the request."""


# ------------------------------------------------------------------------------------------------ locations


def is_s3(uri: object) -> TypeGuard[str]:
    """Whether ``uri`` is an ``s3://`` location (a string starting with ``s3://``)."""
    return isinstance(uri, str) and uri.startswith(_SCHEME)


def parse_s3(uri: str) -> tuple[str, str]:
    """``"s3://bucket/some/prefix"`` -> ``("bucket", "some/prefix")``.

    The key prefix has no leading slash and keeps a trailing one; it is ``""`` for a whole bucket.
    Raises :class:`ValueError` for anything else: another scheme, no or an invalid bucket name, empty,
    ``.`` or ``..`` path segments.
    """
    if not is_s3(uri):
        raise ValueError(f"{uri!r} is not an s3:// location (expected s3://bucket/prefix)")
    rest = uri[len(_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r}: no bucket name (expected s3://bucket/prefix)")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(
            f"{uri!r}: invalid bucket name {bucket!r} (3-63 characters: letters, digits, '.', '-', '_')"
        )
    if key:
        segments = key[:-1].split("/") if key.endswith("/") else key.split("/")
        for segment in segments:
            if segment in ("", ".", ".."):
                raise ValueError(f"{uri!r}: empty, '.' or '..' path segment in the key")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` location (always with ``/`` for s3)."""
    if is_s3(base):
        out = base.rstrip("/")
        for part in parts:
            out += "/" + part.strip("/")
        return out
    return str(Path(base).joinpath(*parts))


def default_cache_dir() -> Path:
    """The cache root: ``$VLSA_CACHE_DIR`` or ``~/.cache/vlsa-platform``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlsa-platform"


# --------------------------------------------------------------------------------------------------- client


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(*, connect_timeout: float = 3.0, read_timeout: float = 60.0, max_attempts: int = 3) -> S3Client:
    """A boto3 S3 client configured from the standard AWS environment variables.

    With ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` set, it talks to that server with path-style
    addressing. Connect/read timeouts and the number of attempts are bounded (``AWS_MAX_ATTEMPTS`` and
    ``AWS_RETRY_MODE``, if set, win), so an unreachable endpoint fails in a few seconds.
    """
    import boto3
    from botocore.config import Config

    endpoint = _endpoint_from_env()
    retries: dict[str, Any] = {"mode": os.environ.get("AWS_RETRY_MODE", "standard")}
    if "AWS_MAX_ATTEMPTS" not in os.environ:
        retries["max_attempts"] = max_attempts
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries=retries,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


_DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "Forbidden",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}


def _translate(exc: Exception, uri: str, client: S3Client) -> StorageError | None:
    """The :class:`StorageError` for a boto3/botocore exception, or ``None`` if it is something else."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    endpoint = client.meta.endpoint_url
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message", "") or str(exc)
        if code in _DENIED_CODES:
            return AccessDeniedError(
                f"{uri}: access denied by {endpoint} ({code}: {message}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions"
            )
        if code == "NoSuchBucket":
            return NotFoundError(f"{uri}: bucket {parse_s3(uri)[0]!r} does not exist on {endpoint}")
        if code in _MISSING_CODES:
            return NotFoundError(f"{uri}: no such object on {endpoint}")
        return StorageError(f"{uri}: S3 request to {endpoint} failed ({code}: {message})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDeniedError(
            f"{uri}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ConnectionError):
        return StorageError(
            f"{uri}: cannot reach the S3 endpoint {endpoint} ({exc}); "
            "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and that the server is running"
        )
    return None


@contextlib.contextmanager
def _s3_errors(uri: str, client: S3Client) -> Iterator[None]:
    """Re-raise boto3/botocore errors as :class:`StorageError` naming ``uri``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        translated = _translate(exc, uri, client)
        if translated is None:
            raise
        raise translated from exc


# ---------------------------------------------------------------------------------------------- materialize


def materialize(
    uri: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    client: S3Client | None = None,
) -> str | os.PathLike[str] | Path:
    """A local location for ``uri``.

    Anything that is not an ``s3://`` string (a local path, a hub id) is returned unchanged. An ``s3://``
    location is mirrored under ``<cache root>/s3/<bucket>/<key>`` (cache root: ``cache_dir``, else
    :func:`default_cache_dir`) and that local path is returned: a directory for a prefix, or a file when the
    location names a single object. Objects whose size and ETag match the last download (and whose local
    copy is untouched) are not fetched again; files that disappeared from the prefix are removed. Each file
    is written atomically, and concurrent calls on one machine wait for each other instead of downloading
    twice.
    """
    if not is_s3(uri):
        return uri
    bucket, key = parse_s3(uri)
    client = client or s3_client()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    s3_root = root / "s3"
    state = s3_root / _STATE_DIR / bucket / hashlib.sha256(key.encode()).hexdigest()[:32]
    state.parent.mkdir(parents=True, exist_ok=True)

    with _s3_errors(uri, client), _file_lock(state.with_suffix(".lock")):
        objects, single = _list_remote(client, uri, bucket, key)
        base = s3_root / bucket / key.rstrip("/") if key else s3_root / bucket
        if single:
            base.parent.mkdir(parents=True, exist_ok=True)
        else:
            base.mkdir(parents=True, exist_ok=True)
        _sync(client, uri, bucket, objects, base, single, state.with_suffix(".json"))
        return base


def _list_remote(client: S3Client, uri: str, bucket: str, key: str) -> tuple[dict[str, dict[str, Any]], bool]:
    """``({relative path: {"key", "etag", "size"}}, single)``: the objects under ``key`` (a prefix), or the
    one object named ``key`` (``single``; its relative path is ``""``)."""
    prefix = key if (not key or key.endswith("/")) else key + "/"
    objects: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            rel = item["Key"][len(prefix) :]
            if not rel or rel.endswith("/"):  # the prefix itself or a "folder" marker
                continue
            parts = rel.split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise StorageError(f"{uri}: object key {item['Key']!r} cannot be stored as a local file")
            objects[rel] = {"key": item["Key"], "etag": item["ETag"], "size": item["Size"]}
    if objects:
        return objects, False
    if key and not key.endswith("/"):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            translated = _translate(exc, uri, client)
            if isinstance(translated, NotFoundError):
                raise NotFoundError(f"{uri}: no object at this key and none under it as a prefix") from exc
            raise
        return {"": {"key": key, "etag": head["ETag"], "size": head["ContentLength"]}}, True
    raise NotFoundError(f"{uri}: no objects under this prefix")


def _sync(
    client: S3Client,
    uri: str,
    bucket: str,
    objects: dict[str, dict[str, Any]],
    base: Path,
    single: bool,
    manifest_path: Path,
) -> None:
    """Download what changed into ``base`` and record it in the manifest (sidecar JSON)."""
    try:
        previous: dict[str, dict[str, Any]] = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = {}

    def local(rel: str) -> Path:
        return base if single else base.joinpath(*rel.split("/"))

    def up_to_date(rel: str, obj: dict[str, Any]) -> bool:
        record = previous.get(rel)
        if not record or record.get("etag") != obj["etag"] or record.get("size") != obj["size"]:
            return False
        try:
            st = local(rel).stat()
        except OSError:
            return False
        return st.st_size == obj["size"] and st.st_mtime_ns == record.get("mtime_ns")

    done = {rel: previous[rel] for rel, obj in objects.items() if up_to_date(rel, obj)}
    todo = [rel for rel in objects if rel not in done]
    if todo:
        total = sum(objects[rel]["size"] for rel in todo)
        log.info("downloading %d of %d objects (%.1f MB) from %s", len(todo), len(objects), total / 1e6, uri)

    def fetch(rel: str) -> tuple[str, dict[str, Any]]:
        obj = objects[rel]
        target = local(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            client.download_file(bucket, obj["key"], str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        record = {"etag": obj["etag"], "size": obj["size"], "mtime_ns": target.stat().st_mtime_ns}
        return rel, record

    try:
        if len(todo) == 1:
            rel, record = fetch(todo[0])
            done[rel] = record
        elif todo:
            with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(todo))) as pool:
                for rel, record in pool.map(fetch, todo):
                    done[rel] = record
    finally:
        _write_json_atomic(manifest_path, {"uri": uri, "files": done})

    if not single:
        for rel in set(previous) - set(objects):  # removed remotely since the last call
            local(rel).unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: object) -> None:
    durable.replace_text(path, json.dumps(data, indent=1, sort_keys=True))


# --------------------------------------------------------------------------------------- uploads and reads


def upload_file(local_path: str | os.PathLike[str], uri: str, *, client: S3Client | None = None) -> str:
    """Copy one file to ``uri`` (an ``s3://`` location or a local path) and return where it went.

    A destination ending in ``/`` (or an existing local directory) receives the file under its own name.
    """
    src = Path(local_path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: not a file")
    if uri.endswith("/") or (not is_s3(uri) and Path(uri).is_dir()):
        uri = join(uri, src.name)
    if not is_s3(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, uri)
        return uri
    bucket, key = parse_s3(uri)
    client = client or s3_client()
    with _s3_errors(uri, client):
        client.upload_file(str(src), bucket, key)
    return uri


def upload_dir(local_dir: str | os.PathLike[str], uri: str, *, client: S3Client | None = None) -> list[str]:
    """Copy every file under ``local_dir`` to the same relative paths under ``uri`` (``s3://`` or local);
    return the destinations written."""
    src = Path(local_dir)
    if not src.is_dir():
        raise NotADirectoryError(f"{src}: not a directory")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not is_s3(uri):
        shutil.copytree(src, uri, dirs_exist_ok=True)
        return [str(Path(uri, p.relative_to(src))) for p in files]
    parse_s3(uri)
    client = client or s3_client()
    targets = [join(uri, p.relative_to(src).as_posix()) for p in files]

    def put(item: tuple[Path, str]) -> None:
        path, target = item
        bucket, key = parse_s3(target)
        with _s3_errors(target, client):
            client.upload_file(str(path), bucket, key)

    with ThreadPoolExecutor(max_workers=max(1, min(_MAX_WORKERS, len(files)))) as pool:
        list(pool.map(put, zip(files, targets, strict=True)))
    return targets


def read_bytes(uri: str | os.PathLike[str], *, client: S3Client | None = None) -> bytes:
    """The whole content of a small file: a local path or an ``s3://`` object."""
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = parse_s3(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"{uri!r} names a prefix, not an object")
    client = client or s3_client()
    with _s3_errors(uri, client):
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8", *, client: S3Client | None = None) -> str:
    """The whole content of a small text file (local or ``s3://``)."""
    return read_bytes(uri, client=client).decode(encoding)


def open_text(
    uri: str | os.PathLike[str], encoding: str = "utf-8", *, client: S3Client | None = None
) -> TextIO:
    """A text stream over a small file (local or ``s3://``, read whole); use it as a context manager."""
    if not is_s3(uri):
        return open(uri, encoding=encoding)
    return io.StringIO(read_text(uri, encoding, client=client))


def write_text(uri: str | os.PathLike[str], text: str, *, client: S3Client | None = None) -> None:
    """Write a small text file (local: atomically and durably, :func:`.durable.replace_text`; ``s3://``: one PUT)."""
    if not is_s3(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        durable.replace_text(Path(uri), text)
        return
    bucket, key = parse_s3(str(uri))
    client = client or s3_client()
    with _s3_errors(str(uri), client):
        client.put_object(Bucket=bucket, Key=key, Body=text.encode())


# Conditional writes: what several processes racing on one location (claims of shared stage prefixes) need.
# Local: a complete temporary file hard-linked into place (fails when the name exists), replacements under a
# flock of a sidecar file; S3: PUT with If-None-Match / If-Match (AWS S3, SeaweedFS, MinIO). A version is the
# content's SHA-256 locally and the ETag on S3.
_LOST_RACE_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _lost_race(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in _LOST_RACE_CODES


def _conditional_put(uri: str, text: str, client: S3Client | None, **condition: str) -> str | None:
    bucket, key = parse_s3(uri)
    client = client or s3_client()
    try:
        with _s3_errors(uri, client):
            return str(client.put_object(Bucket=bucket, Key=key, Body=text.encode(), **condition)["ETag"])
    except StorageError as exc:
        if exc.__cause__ is not None and _lost_race(exc.__cause__):
            return None
        raise


def create_exclusive(uri: str | os.PathLike[str], text: str, *, client: S3Client | None = None) -> str | None:
    """Write a small text file only where none exists: its version when this call created it, ``None`` when
    a file was there. Of racing callers exactly one creates it; the file is never seen half-written."""
    if is_s3(uri):
        return _conditional_put(uri, text, client, IfNoneMatch="*")
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.temp_copy(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return None
    finally:
        tmp.unlink()
    durable.sync_dir(path.parent)
    return hashlib.sha256(text.encode()).hexdigest()


def read_versioned(uri: str | os.PathLike[str], *, client: S3Client | None = None) -> tuple[str, str]:
    """A small text file and its version, for :func:`replace_if`."""
    if not is_s3(uri):
        text = Path(uri).read_text()
        return text, hashlib.sha256(text.encode()).hexdigest()
    bucket, key = parse_s3(uri)
    client = client or s3_client()
    with _s3_errors(uri, client):
        response = client.get_object(Bucket=bucket, Key=key)
        return response["Body"].read().decode(), str(response["ETag"])


def replace_if(
    uri: str | os.PathLike[str], text: str, version: str, *, client: S3Client | None = None
) -> str | None:
    """Overwrite a small text file only if it is still at ``version`` (:func:`read_versioned`): the new version,
    or ``None`` when another writer changed it first (or it is gone)."""
    if is_s3(uri):
        return _conditional_put(uri, text, client, IfMatch=version)
    path = Path(uri)
    with _file_lock(path.with_name(f".{path.name}.lock")):
        try:
            current = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None
        if current != version:
            return None
        write_text(path, text)
    return hashlib.sha256(text.encode()).hexdigest()


def delete(uri: str | os.PathLike[str], *, client: S3Client | None = None) -> None:
    """Remove one file (local path or ``s3://`` object); a missing one is not an error."""
    if not is_s3(uri):
        Path(uri).unlink(missing_ok=True)
        return
    bucket, key = parse_s3(str(uri))
    client = client or s3_client()
    with _s3_errors(str(uri), client):
        client.delete_object(Bucket=bucket, Key=key)


def arrow_filesystem(uri: str) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for an ``s3://`` location, configured from the same AWS variables as
    :func:`s3_client` (endpoint, keys, region), for libraries that take one (Ray Train's run storage);
    ``None`` for a local path."""
    if not is_s3(uri):
        return None
    import boto3
    from pyarrow import fs

    endpoint = _endpoint_from_env()
    session = boto3.session.Session()
    credentials = session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    kwargs: dict[str, Any] = {"region": session.region_name or "us-east-1"}
    if frozen is not None:
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        kwargs.update(endpoint_override=rest or endpoint, scheme=scheme if rest else "https")
    return fs.S3FileSystem(**kwargs)


def exists(uri: str | os.PathLike[str], *, client: S3Client | None = None) -> bool:
    """Whether a local path exists, or an ``s3://`` location names an object or a non-empty prefix
    (``False`` for a missing bucket too)."""
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = parse_s3(uri)
    client = client or s3_client()
    prefix = key if (not key or key.endswith("/")) else key + "/"
    try:
        with _s3_errors(uri, client):
            if client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0):
                return True
            if prefix == key:
                return False
            client.head_object(Bucket=bucket, Key=key)
            return True
    except NotFoundError:
        return False
