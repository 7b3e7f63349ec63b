"""What a local ``submit`` listens on: its local Ray (:func:`vlsa_platform.orchestration.local.local_ray`,
with a task and an actor so that workers exist) and its local MLflow server, started as ``run_local`` starts
them. Every TCP port any of their processes listens on is bound to loopback, and Ray's servers refuse a
request that lacks the token (gRPC to the GCS, HTTP to the dashboard) even there.

One Ray start (tens of seconds), hence ``e2e``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from vlsa_platform.orchestration.local import LOCAL_RAY_ENV, local_ray
from vlsa_platform.tracking.store import LocalTrackingServer

pytestmark = pytest.mark.e2e


def _listening(root: psutil.Process) -> list[tuple[int, str, str, int]]:
    """``(pid, name, address, port)`` of every TCP socket listening in ``root`` or its descendants."""
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(proc.cmdline())[:200]
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((proc.pid, name, conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> Iterator[LocalTrackingServer]:
    """The local MLflow server and local Ray, with a finished task and a live actor, for the module; started
    with ``RAY_AUTH_MODE=disabled`` in the environment, which the local Ray overrides."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("needs its own local Ray (one is already running in this process)")
    monkeypatch_module.setenv("RAY_AUTH_MODE", "disabled")
    # Up before Ray starts (``run_local`` starts both at once; one after the other is lighter on a small machine).
    server = LocalTrackingServer(tmp_path_factory.mktemp("mlflow"), startup_timeout_s=180.0).start()
    try:
        with local_ray(num_cpus=1):

            @ray.remote
            class Counter:
                def pid(self) -> int:
                    return os.getpid()

            @ray.remote
            def task_pid() -> int:
                return os.getpid()

            counter = Counter.remote()  # type: ignore[attr-defined]
            assert ray.get(counter.pid.remote()) != os.getpid()
            assert ray.get(task_pid.remote()) != os.getpid()
            yield server
    finally:
        server.stop()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"  # restored once the local Ray is gone


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_port_of_ray_and_mlflow_is_on_loopback(running):
    listening = _listening(psutil.Process())
    names = " ".join(name for _, name, _, _ in listening)
    for part in ("gcs_server", "raylet", "mlflow", "uvicorn"):  # the processes looked at are the right ones
        assert part in names, (part, listening)
    assert any(port == int(running.url.rsplit(":", 1)[1]) for *_, port in listening)
    exposed = [entry for entry in listening if not _is_loopback(entry[2])]
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(map(str, exposed))


def test_ray_refuses_requests_without_its_token(running):
    import grpc
    import ray
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    assert os.environ["RAY_AUTH_MODE"] == LOCAL_RAY_ENV["RAY_AUTH_MODE"] == "token"
    token = AuthenticationTokenLoader.instance().get_raw_token()
    assert token
    header = f"Bearer {token}"

    gcs = ray.get_runtime_context().gcs_address
    with grpc.insecure_channel(gcs) as channel:
        nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo
        with pytest.raises(grpc.RpcError) as refused:
            nodes(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = nodes(
            gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10, metadata=[("authorization", header)]
        )
        assert len(reply.node_info_list) == 1

    dashboard = f"http://{ray._private.worker.get_dashboard_url()}/api/jobs/"
    for headers, expected in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
        with pytest.raises(urllib.error.HTTPError) as refused_http:
            urllib.request.urlopen(urllib.request.Request(dashboard, headers=headers), timeout=10)
        assert refused_http.value.code == expected
    with urllib.request.urlopen(
        urllib.request.Request(dashboard, headers={"Authorization": header}), timeout=10
    ) as answer:
        assert isinstance(json.loads(answer.read()), list)


def test_the_default_token_file_is_private(running):
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        pytest.skip("the token is the user's (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), not Ray's default file")
    assert stat.S_IMODE((Path.home() / ".ray" / "auth_token").stat().st_mode) == 0o600
