"""Fixtures of the orchestration tests: a real Ray head with token authentication (:mod:`.ray_head`), a local
Ray in this process for the Ray Train runs and the submissions, and a submission's work folder."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vlsa_platform.cluster import BUILTIN, node_resources

from .ray_head import RayHead, ray_head


@pytest.fixture(scope="module")
def cluster(s3_server):
    """A local Ray (2 CPUs, token auth as Ray sets it up) with 2 simulated H100s and 2 A10Gs, and the S3 server's
    AWS variables in the environment its workers inherit."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("needs its own local Ray (one is already running in this process)")
    saved = {key: os.environ.get(key) for key in s3_server.env()}
    os.environ.update(s3_server.env())
    resources = {**node_resources(BUILTIN["H100"], 2), **node_resources(BUILTIN["A10G"], 2)}
    ray.init(num_cpus=2, resources=resources, include_dashboard=False, log_to_driver=False)
    yield s3_server
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A Ray head on 127.0.0.1 (``ray start --head --block``, 2 CPUs, token auth with a token of its own),
    for the module; ``ray_cluster.address`` is the dashboard (what ``--address`` takes)."""
    with ray_head(tmp_path_factory.mktemp("ray_head")) as head:
        yield head


@pytest.fixture
def ray_client_env(ray_cluster: RayHead, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> RayHead:
    """This process set up as a user of ``ray_cluster``: its token through ``$RAY_AUTH_TOKEN_PATH``, no
    ``$RAY_AUTH_TOKEN`` or address variables, and a ``HOME`` without ``~/.ray/auth_token``."""
    for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for key, value in ray_cluster.client_env().items():
        monkeypatch.setenv(key, value)
    return ray_cluster


@pytest.fixture(scope="module")
def local_cluster():
    """A local Ray of 2 CPUs in this process (``local_ray``: token auth, loopback) for a module's submissions."""
    from vlsa_platform.orchestration.local import local_ray

    with local_ray(num_cpus=2) as resources:
        yield resources


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A submission's work folder (``--workdir``) under the test's own, run from there, with no tracking URI
    from the environment (a module may define its own)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "work"
