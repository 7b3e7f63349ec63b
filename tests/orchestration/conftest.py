"""Fixtures of the orchestration tests: a real Ray head with token authentication (:mod:`.ray_head`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .ray_head import RayHead, ray_head


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
