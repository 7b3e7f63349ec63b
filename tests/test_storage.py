"""vlsa_platform.storage against a real S3 server (SeaweedFS, keys enforced) and local folders."""

from __future__ import annotations

import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vlsa_platform import storage

TREE = {
    "config.json": b'{"hidden_size": 8}\n',
    "weights.bin": bytes(range(256)) * 64,
    "sub/tokenizer.txt": b"hello\nworld\n",
    "sub/deeper/notes.md": b"# notes\n",
}


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS_* variables for the test server, and a clean cache root."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


def _write_tree(root: Path, tree: dict[str, bytes]) -> Path:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _unique_uri(server, name: str) -> str:
    return f"s3://{server.bucket}/{name}-{uuid.uuid4().hex[:8]}"


class _CountingClient:
    """Wraps a boto3 client and records the keys passed to ``download_file``."""

    def __init__(self, client):
        self._client = client
        self.downloaded: list[str] = []

    def download_file(self, bucket, key, filename, **kwargs):
        self.downloaded.append(key)
        return self._client.download_file(bucket, key, filename, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_upload_materialize_roundtrip_and_cache(s3_env, tmp_path):
    src = _write_tree(tmp_path / "src", TREE)
    uri = _unique_uri(s3_env, "model")
    client = _CountingClient(storage.s3_client())

    uploaded = storage.upload_dir(src, uri, client=client)
    assert sorted(uploaded) == sorted(f"{uri}/{rel}" for rel in TREE)

    cache = tmp_path / "cache"
    local = storage.materialize(uri, cache, client=client)
    assert isinstance(local, Path) and local.is_dir()
    assert local.is_relative_to(cache)
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == sorted(TREE)
    for rel, data in TREE.items():
        assert (local / rel).read_bytes() == data
    assert sorted(client.downloaded) == sorted(
        f"{uri[len('s3://') + len(s3_env.bucket) + 1 :]}/{r}" for r in TREE
    )

    # Second call: everything matches size and ETag, nothing is fetched.
    client.downloaded.clear()
    assert storage.materialize(uri, cache, client=client) == local
    assert client.downloaded == []

    # One object changes remotely: only that one is fetched again.
    storage.upload_file(
        _write_tree(tmp_path / "v2", {"t.txt": b"changed\n"}) / "t.txt", f"{uri}/sub/tokenizer.txt"
    )
    assert storage.materialize(uri, cache, client=client) == local
    assert [k.rsplit("/", 2)[-2:] for k in client.downloaded] == [["sub", "tokenizer.txt"]]
    assert (local / "sub/tokenizer.txt").read_bytes() == b"changed\n"
    assert (local / "weights.bin").read_bytes() == TREE["weights.bin"]

    # A local copy that was tampered with is repaired; no stray temp files are left behind.
    client.downloaded.clear()
    (local / "config.json").write_bytes(b"{}")
    storage.materialize(uri, cache, client=client)
    assert [k.rsplit("/", 1)[-1] for k in client.downloaded] == ["config.json"]
    assert (local / "config.json").read_bytes() == TREE["config.json"]
    assert not [p for p in local.rglob("*.part")]


def test_materialize_single_object_small_reads_and_env_cache_dir(s3_env, tmp_path, monkeypatch):
    uri = _unique_uri(s3_env, "one") + "/config.json"
    storage.upload_file(_write_tree(tmp_path, {"config.json": TREE["config.json"]}) / "config.json", uri)
    monkeypatch.setenv(storage.CACHE_DIR_ENV, str(tmp_path / "envcache"))

    local = storage.materialize(uri)
    assert isinstance(local, Path) and local.is_file()
    assert local.is_relative_to(tmp_path / "envcache" / "s3" / s3_env.bucket)
    assert local.read_bytes() == TREE["config.json"]

    client = storage.s3_client()
    assert storage.read_bytes(uri, client=client) == TREE["config.json"]
    assert storage.read_text(uri, client=client) == TREE["config.json"].decode()
    with storage.open_text(uri, client=client) as handle:
        assert handle.read() == TREE["config.json"].decode()
    assert storage.exists(uri, client=client)
    assert storage.exists(uri.rsplit("/", 1)[0], client=client)
    assert not storage.exists(uri + ".missing", client=client)
    assert not storage.exists("s3://no-such-bucket-vlsa/x", client=client)


def test_missing_bucket_and_empty_prefix_name_the_uri(s3_env, tmp_path):
    missing_bucket = "s3://no-such-bucket-vlsa/some/prefix"
    with pytest.raises(storage.NotFoundError, match=r"s3://no-such-bucket-vlsa/some/prefix.*does not exist"):
        storage.materialize(missing_bucket, tmp_path)
    empty = _unique_uri(s3_env, "empty")
    with pytest.raises(storage.NotFoundError, match=rf"{empty}: no object"):
        storage.materialize(empty, tmp_path)
    with pytest.raises(storage.NotFoundError, match="no such object"):
        storage.read_bytes(empty + "/nothing.txt")


def test_wrong_secret_is_refused_with_the_uri(s3_env, tmp_path, monkeypatch):
    uri = _unique_uri(s3_env, "secret")
    storage.upload_dir(_write_tree(tmp_path / "src", {"a.txt": b"a"}), uri)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key + "-wrong")
    with pytest.raises(storage.AccessDeniedError, match=rf"{uri}: access denied") as info:
        storage.materialize(uri, tmp_path / "cache")
    assert isinstance(info.value, PermissionError)
    with pytest.raises(storage.AccessDeniedError, match="access denied"):
        storage.read_bytes(uri + "/a.txt")
    with pytest.raises(storage.AccessDeniedError, match="access denied"):
        storage.upload_file(tmp_path / "src" / "a.txt", uri + "/b.txt")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
    with pytest.raises(storage.AccessDeniedError, match="access denied"):
        storage.materialize(uri, tmp_path / "cache")


def test_unreachable_endpoint_fails_fast(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(
        storage.StorageError, match=rf"s3://bucket/data: cannot reach the S3 endpoint .*:{port}"
    ):
        storage.materialize("s3://bucket/data", tmp_path)


def test_non_s3_locations_come_back_unchanged(tmp_path):
    for value in [
        "Qwen/Qwen2-0.5B",
        "stabilityai/stable-diffusion-3-medium-diffusers:vae",
        "relative/dir",
        str(tmp_path),
    ]:
        assert storage.materialize(value) is value
    assert storage.materialize(tmp_path) is tmp_path
    assert not storage.is_s3(tmp_path)
    assert not storage.is_s3("S3-like/name")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3:///key",
        "s3://b/x",
        "s3://bad bucket/x",
        "s3://bucket//x",
        "s3://bucket/a/../b",
        "http://x/y",
    ],
)
def test_malformed_s3_uris_raise_value_error(uri):
    with pytest.raises(ValueError):
        storage.parse_s3(uri)


def test_parse_and_join():
    assert storage.parse_s3("s3://bucket") == ("bucket", "")
    assert storage.parse_s3("s3://bucket/") == ("bucket", "")
    assert storage.parse_s3("s3://my.bucket-1/a/b/") == ("my.bucket-1", "a/b/")
    assert storage.join("s3://bucket/runs/", "r1", "ckpt") == "s3://bucket/runs/r1/ckpt"
    assert storage.join("/tmp/runs", "r1") == "/tmp/runs/r1"


def test_local_upload_and_reads(tmp_path):
    src = _write_tree(tmp_path / "src", TREE)
    written = storage.upload_dir(src, str(tmp_path / "dst"))
    assert len(written) == len(TREE)
    assert (tmp_path / "dst/sub/deeper/notes.md").read_bytes() == TREE["sub/deeper/notes.md"]
    dest = storage.upload_file(src / "config.json", str(tmp_path / "one") + "/")
    assert Path(dest) == tmp_path / "one" / "config.json"
    assert storage.read_bytes(dest) == TREE["config.json"]
    assert storage.exists(dest) and not storage.exists(str(tmp_path / "nope"))


def test_concurrent_materialize_downloads_once(s3_env, tmp_path):
    uri = _unique_uri(s3_env, "shared")
    client = _CountingClient(storage.s3_client())
    storage.upload_dir(_write_tree(tmp_path / "src", TREE), uri, client=client)
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(
            pool.map(lambda _: storage.materialize(uri, tmp_path / "cache", client=client), range(3))
        )
    assert len(set(paths)) == 1
    assert len(client.downloaded) == len(TREE)  # each object once, though three callers asked
