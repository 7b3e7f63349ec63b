"""docker-compose.yml, checked without a Docker engine (the checks are in :mod:`.compose_checks`): the file as
committed passes every check, and every check reports a planted defect in an in-memory copy of the file (or of
``.env.example``, ``.gitignore``, the Dockerfile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .compose_checks import (
    CHECKS,
    DOCKERFILE,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    GITIGNORE,
    Doc,
    compose_text,
    env_example_problems,
    gitignore_problems,
    image_problems,
    interpolated,
    load_compose,
)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_compose_file_passes(check: str) -> None:
    assert CHECKS[check](load_compose()) == []


def test_compose_file_defines_the_stack() -> None:
    services = set(load_compose()["services"])
    assert {"ray-head", "ray-worker-cpu", "ray-worker-gpu", "mlflow", "postgres", "seaweedfs"} <= services


def test_env_example_lists_every_variable() -> None:
    assert env_example_problems(compose_text(), ENV_EXAMPLE.read_text()) == []
    assert {"VLSA_RAY_TOKEN_PATH", "POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD"} <= set(
        interpolated(compose_text())
    )


def test_env_is_ignored() -> None:
    assert gitignore_problems(GITIGNORE.read_text()) == []


def test_image_keeps_the_shared_scripts() -> None:
    assert image_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


def _svc(doc: Doc, name: str) -> dict[str, Any]:
    return doc["services"][name]


def _set_env(service: str, var: str, value: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        _svc(doc, service)["environment"][var] = value

    return mutate


def _set(service: str, key: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        _svc(doc, service)[key] = value

    return mutate


def _drop(service: str, key: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        del _svc(doc, service)[key]

    return mutate


DEFECTS: list[tuple[str, str, Callable[[Doc], None], str]] = [
    # (id, check, planted defect, what the report must say)
    ("unknown-key", "schema", _set("postgres", "helthcheck", {}), "helthcheck"),
    ("ports-not-a-list", "schema", _set("mlflow", "ports", "5000"), "ports"),
    ("short-port-no-ip", "ports", _set("ray-head", "ports", ["8265:8265"]), "'8265:8265' is not bound"),
    ("short-port-any-ip", "ports", _set("mlflow", "ports", ["0.0.0.0:5000:5000"]), "is not bound"),
    ("bare-port", "ports", _set("seaweedfs", "ports", [8333]), "8333 is not bound"),
    (
        "long-port-no-ip",
        "ports",
        _set("mlflow", "ports", [{"target": 5000, "published": "5000"}]),
        "not bound",
    ),
    (
        "long-port-any-ip",
        "ports",
        _set("mlflow", "ports", [{"target": 5000, "host_ip": "0.0.0.0"}]),
        "not bound",
    ),
    ("host-network", "ports", _set("postgres", "network_mode", "host"), "network_mode host"),
    (
        "literal-password",
        "secrets",
        _set_env("postgres", "POSTGRES_PASSWORD", "hunter2"),
        "POSTGRES_PASSWORD",
    ),
    (
        "default-password",
        "secrets",
        _set_env("mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD", "${MLFLOW_ADMIN_PASSWORD:-changeme}"),
        "MLFLOW_AUTH_ADMIN_PASSWORD",
    ),
    (
        "literal-key",
        "secrets",
        _set_env("seaweedfs", "AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        "AWS_ACCESS_KEY_ID",
    ),
    (
        "list-syntax-secret",
        "secrets",
        _set("seaweedfs", "environment", ["AWS_SECRET_ACCESS_KEY=abc123"]),
        "AWS_SECRET_ACCESS_KEY",
    ),
    (
        "uri-password",
        "secrets",
        _set_env("mlflow", "VLSA_MLFLOW_AUTH_DB_URI", "postgresql://mlflow:pw123@postgres:5432/mlflow_auth"),
        "literal password",
    ),
    ("command-password", "secrets", _set("postgres", "command", ["postgres", "--password=abc"]), "inline"),
    (
        "inline-build-arg",
        "secrets",
        lambda d: _svc(d, "mlflow")["build"]["args"].update(API_KEY="k1"),
        "API_KEY",
    ),
    (
        "secret-file-in-repo",
        "secrets",
        lambda d: d["secrets"]["ray_token"].update(file="./ray-token"),
        "ray_token",
    ),
    ("no-script", "scripts", _set("mlflow", "command", ["mlflow", "server"]), "runs no script"),
    (
        "missing-script",
        "scripts",
        _set("mlflow", "command", ["/opt/vlsa/infra/scripts/nope.sh"]),
        "infra/scripts/nope.sh is missing",
    ),
    ("entrypoint", "scripts", _set("ray-head", "entrypoint", ["ray"]), "entrypoint"),
    ("no-healthcheck", "health", _drop("seaweedfs", "healthcheck"), "seaweedfs: no health check"),
    ("disabled-healthcheck", "health", _set("postgres", "healthcheck", {"disable": True}), "no health check"),
    ("depends-list", "health", _set("mlflow", "depends_on", ["postgres"]), "depends on postgres"),
    (
        "depends-started",
        "health",
        _set("ray-head", "depends_on", {"mlflow": {"condition": "service_started"}}),
        "depends on mlflow",
    ),
    (
        "undeclared-volume",
        "volumes",
        lambda d: d["volumes"].pop("postgres-data"),
        "postgres-data is not declared",
    ),
    ("writable-bind", "volumes", _set("seaweedfs", "volumes", ["./data:/data"]), "./data is writable"),
    ("worker-without-token", "ray", _set("ray-worker-cpu", "secrets", []), "ray-worker-cpu: the Ray token"),
    (
        "token-elsewhere",
        "ray",
        _set_env("ray-head", "VLSA_RAY_TOKEN_FILE", "/tmp/t"),
        "ray-head: the Ray token",
    ),
    ("gpu-without-device", "ray", _drop("ray-worker-gpu", "deploy"), "reserves no NVIDIA device"),
    ("no-cpu-profile", "ray", _drop("ray-worker-cpu", "profiles"), "profiles"),
    (
        "cpu-with-device",
        "ray",
        lambda d: _svc(d, "ray-worker-cpu").update(deploy=_svc(d, "ray-worker-gpu")["deploy"]),
        "the cpu worker reserves devices",
    ),
]


@pytest.mark.parametrize(
    ("check", "mutate", "expected"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS]
)
def test_planted_defect_is_reported(check: str, mutate: Callable[[Doc], None], expected: str) -> None:
    doc = load_compose()
    mutate(doc)
    problems = CHECKS[check](doc)
    assert any(expected in problem for problem in problems), problems


EXAMPLE_DEFECTS: list[tuple[str, Callable[[str, str], tuple[str, str]], str]] = [
    # (id, planted defect on (compose text, example text), what the report must say)
    (
        "required-missing",
        lambda c, e: (c, e.replace("\nPOSTGRES_PASSWORD=", "\n")),
        "POSTGRES_PASSWORD: required",
    ),
    (
        "required-commented",
        lambda c, e: (c, e.replace("\nMLFLOW_DB_PASSWORD=", "\n# MLFLOW_DB_PASSWORD=")),
        "MLFLOW_DB_PASSWORD: required",
    ),
    (
        "optional-missing",
        lambda c, e: (c, e.replace("# VLSA_S3_BUCKET=", "# bucket")),
        "VLSA_S3_BUCKET: interp",
    ),
    ("new-variable", lambda c, e: (c + "\nx-new: ${VLSA_NEW:-1}\n", e), "VLSA_NEW: interpolated"),
    ("bare-variable", lambda c, e: (c + "\nx-new: $VLSA_BARE\n", e), "VLSA_BARE: required"),
    ("stale-variable", lambda c, e: (c, e + "\nVLSA_STALE=1\n"), "VLSA_STALE: not used"),
    (
        "secret-in-example",
        lambda c, e: (c, e.replace("\nMLFLOW_ADMIN_PASSWORD=", "\nMLFLOW_ADMIN_PASSWORD=hunter2")),
        "MLFLOW_ADMIN_PASSWORD: a secret",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [d[1:] for d in EXAMPLE_DEFECTS], ids=[d[0] for d in EXAMPLE_DEFECTS]
)
def test_env_example_defect_is_reported(mutate: Callable[[str, str], tuple[str, str]], expected: str) -> None:
    text, example_text = mutate(compose_text(), ENV_EXAMPLE.read_text())
    problems = env_example_problems(text, example_text)
    assert any(expected in problem for problem in problems), problems


def test_escaped_dollar_is_not_a_variable() -> None:
    assert interpolated("a: $${NOT_ONE} $$NOR_THIS ${ONE:-x} ${TWO:?y} $THREE") == {
        "ONE": False,
        "TWO": True,
        "THREE": True,
    }


@pytest.mark.parametrize(
    ("gitignore", "expected"),
    [("build/\n", ".env is not in .gitignore"), (".env\n.env*\n", "ignores .env.example")],
    ids=["env-not-ignored", "example-ignored"],
)
def test_gitignore_defect_is_reported(gitignore: str, expected: str) -> None:
    assert any(expected in problem for problem in gitignore_problems(gitignore))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("infra/scripts /opt/vlsa/infra/scripts", "infra/scripts /opt/scripts", "does not COPY"),
        ("USER ${VLSA_UID}:${VLSA_GID}", "USER root", "runs as root"),
        ("!infra/scripts/", "", "does not send !infra/scripts/"),
    ],
    ids=["scripts-elsewhere", "root-user", "scripts-not-sent"],
)
def test_image_defect_is_reported(old: str, new: str, expected: str) -> None:
    dockerfile, ignore = DOCKERFILE.read_text(), DOCKERIGNORE.read_text()
    assert old in dockerfile + ignore
    problems = image_problems(dockerfile.replace(old, new), ignore.replace(old, new))
    assert any(expected in problem for problem in problems), problems
