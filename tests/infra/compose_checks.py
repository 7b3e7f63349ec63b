"""The checks of docker-compose.yml that need no Docker engine (tests/infra/test_compose.py runs them): the
compose specification's JSON schema (vendored in ``tests/infra/compose-spec.json``), ports published on
127.0.0.1 only, no inline secret, Ray and MLflow started through the shared scripts of ``infra/scripts`` (the
ones the AWS nodes and the native stack test run), a health check on every service and ``depends_on`` waiting
for it, data in named volumes, the Ray token as a secret file on every node, a CPU and a GPU worker profile,
every interpolated variable in the committed ``.env.example``, ``.env`` ignored by git, and an image that keeps
the scripts and runs as a user other than root.

Each check returns its problems, one line each (an empty list: none).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from vlsa_platform.redact import is_secret_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
ENV_EXAMPLE = ROOT / ".env.example"
GITIGNORE = ROOT / ".gitignore"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
SCRIPTS = ROOT / "infra" / "scripts"
PLATFORM_DOCKERFILE = "infra/docker/Dockerfile"
"""A service built from this file (or using the image it makes) is a platform service."""
PLATFORM_IMAGE = "vlsa-platform:"
IMAGE_SCRIPTS = "/opt/vlsa/infra/scripts/"
"""Where the image keeps ``infra/scripts`` (infra/docker/Dockerfile copies it there)."""
HOST_IP = "127.0.0.1"
SECRETS_DIR = "/run/secrets/"
TOKEN_SECRET = "ray_token"

Doc = dict[str, Any]
Check = Callable[[Doc], list[str]]

_VARIABLE = r"[A-Za-z_][A-Za-z0-9_]*"
_INTERPOLATION = re.compile(rf"(?<!\$)\$(?:\{{({_VARIABLE})([^}}]*)\}}|({_VARIABLE}))")
"""``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$VAR``; never ``$$`` (compose's literal dollar)."""
_REQUIRED_REFERENCE = re.compile(rf"^\$\{{{_VARIABLE}(:?\?[^}}]*)?\}}$")
"""A value that is one variable and nothing else, without a default (a default would be an inline value)."""
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_REF_MARK = "VLSA-REFERENCE"
_INLINE_CREDENTIAL = re.compile(
    r"(?i)\b[\w.-]*(password|passwd|secret|token|key)[\w.-]*\s*[=:]\s*(?!\$)[^\s'\",;]+"
)
"""``--password=abc`` or ``SECRET_KEY=abc`` written into a command or a health check."""


@cache
def compose_text() -> str:
    """docker-compose.yml as written."""
    return COMPOSE_FILE.read_text()


def load_compose() -> Doc:
    """docker-compose.yml as YAML reads it (anchors and merge keys resolved), a fresh copy each call."""
    return copy.deepcopy(_loaded())


@cache
def _loaded() -> Doc:
    return yaml.safe_load(compose_text())


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _services(doc: Doc) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from (doc.get("services") or {}).items()


def _environment(service: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """``(name, value)`` of a service's environment, list or mapping syntax; ``None`` for a bare name."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        for item in env:
            name, sep, value = str(item).partition("=")
            yield name, value if sep else None
    else:
        for name, value in env.items():
            yield str(name), None if value is None else str(value)


def _command(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return " ".join(str(part) for part in command) if isinstance(command, list) else str(command)


def _is_platform(service: dict[str, Any]) -> bool:
    build = service.get("build")
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
    return dockerfile == PLATFORM_DOCKERFILE or str(service.get("image", "")).startswith(PLATFORM_IMAGE)


def _strings(node: Any, *, keys: bool = False) -> Iterator[str]:
    """Every string in ``node`` (and every mapping key, with ``keys``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if keys:
                yield from _strings(key)
            yield from _strings(value, keys=keys)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value, keys=keys)
    elif isinstance(node, str):
        yield node


# ------------------------------------------------------------------------------------------------------ checks


def schema_problems(doc: Doc) -> list[str]:
    """Where the file breaks the compose specification's JSON schema."""
    return [f"{error.json_path}: {error.message}" for error in _validator().iter_errors(doc)]


def _host_ip(port: Any) -> str | None:
    """The host address a ``ports`` entry binds (``None``: all of them)."""
    if isinstance(port, dict):
        return port.get("host_ip")
    spec = str(port).split("/")[0]
    if spec.startswith("["):
        return spec[1:].partition("]")[0]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def port_problems(doc: Doc) -> list[str]:
    """Published ports not bound to 127.0.0.1, and host networking (which publishes everything)."""
    problems = []
    for name, service in _services(doc):
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host listens on the host's every address")
        for port in service.get("ports") or []:
            if _host_ip(port) != HOST_IP:
                problems.append(f"{name}: port {port!r} is not bound to {HOST_IP}")
    return problems


def _is_secret_name(name: str) -> bool:
    return is_secret_key(name) or "key" in re.split(r"[^a-z0-9]+", name.lower())


def _value_problem(where: str, name: str, value: str | None) -> str | None:
    if value is None or not _is_secret_name(name):
        return None
    if name.upper().endswith(("_FILE", "_PATH")) and value.startswith(SECRETS_DIR):
        return None
    if _REQUIRED_REFERENCE.match(value):
        return None
    return f"{where}: {name} is not a ${{VAR}} reference without a default (an inline secret)"


def _uri_problems(where: str, value: str) -> list[str]:
    marked = _INTERPOLATION.sub(_REF_MARK, value)
    problems = []
    for uri in _URI.findall(marked):
        password = urlsplit(uri).password
        if password is not None and password != _REF_MARK:
            problems.append(f"{where}: a URI holds a literal password ({uri.split('@')[-1]})")
    return problems


def secret_problems(doc: Doc) -> list[str]:
    """Inline secrets: a secret-named variable (environment, build args) whose value is not a required
    ``${VAR}`` reference, a URI with a literal password anywhere, a credential written into a command or health
    check, a secret defined inline rather than from a file named in .env."""
    problems = []
    for name, service in _services(doc):
        build = service.get("build")
        args = build.get("args") or {} if isinstance(build, dict) else {}
        pairs = [*_environment(service), *((str(k), None if v is None else str(v)) for k, v in args.items())]
        problems += [p for var, value in pairs if (p := _value_problem(name, var, value))]
        for text in _strings(service):
            problems += _uri_problems(name, text)
        for key in ("command", "entrypoint", "healthcheck"):
            problems += [
                f"{name}: {key} holds an inline credential ({hit.group(0)[:40]})"
                for text in _strings(service.get(key))
                for hit in _INLINE_CREDENTIAL.finditer(text)
            ]
    for secret, spec in (doc.get("secrets") or {}).items():
        source = spec.get("file") if isinstance(spec, dict) else None
        if not (isinstance(source, str) and _REQUIRED_REFERENCE.match(source)):
            problems.append(f"secrets.{secret}: not a file whose path comes from .env (${{VAR}})")
    return problems


def script_problems(doc: Doc) -> list[str]:
    """Platform services that do not run one of the shared scripts of infra/scripts (executable, present)."""
    problems = []
    for name, service in _services(doc):
        if not _is_platform(service):
            continue
        if "entrypoint" in service:
            problems.append(f"{name}: overrides the entrypoint; run a script of infra/scripts as the command")
        found = re.findall(rf"{re.escape(IMAGE_SCRIPTS)}([\w.-]+)", _command(service))
        if not found:
            problems.append(f"{name}: its command runs no script of {IMAGE_SCRIPTS}")
        for script in found:
            path = SCRIPTS / script
            if not (path.is_file() and os.access(path, os.X_OK)):
                problems.append(
                    f"{name}: runs {IMAGE_SCRIPTS}{script}, but infra/scripts/{script} is missing"
                )
    return problems


def health_problems(doc: Doc) -> list[str]:
    """Services without a health check, and dependencies that do not wait for one."""
    problems = []
    for name, service in _services(doc):
        check = service.get("healthcheck") or {}
        test = check.get("test")
        if not test or check.get("disable") or test in ("NONE", ["NONE"]):
            problems.append(f"{name}: no health check")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems += [f"{name}: depends on {dep} without condition service_healthy" for dep in depends]
        else:
            problems += [
                f"{name}: depends on {dep} without condition service_healthy"
                for dep, spec in depends.items()
                if (spec or {}).get("condition") != "service_healthy"
            ]
    return problems


def volume_problems(doc: Doc) -> list[str]:
    """Data lives in named volumes (declared at the top level); a bind mount is read-only configuration."""
    declared = set(doc.get("volumes") or {})
    problems = []
    for name, service in _services(doc):
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source, read_only = volume.get("source", ""), bool(volume.get("read_only"))
                bind = volume.get("type") == "bind"
            else:
                parts = str(volume).split(":")
                source, read_only = parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
                bind = source.startswith((".", "/", "~", "$"))
            if bind and not read_only:
                problems.append(f"{name}: bind mount {source} is writable (data belongs in a named volume)")
            if not bind and source not in declared:
                problems.append(f"{name}: volume {source} is not declared under the top-level volumes")
    return problems


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    resources = (service.get("deploy") or {}).get("resources") or {}
    return (resources.get("reservations") or {}).get("devices") or []


def ray_problems(doc: Doc) -> list[str]:
    """Every Ray node gets the token as the secret file; the workers come as a CPU and an NVIDIA GPU profile."""
    problems, profiles = [], {}
    for name, service in _services(doc):
        command = _command(service)
        if "ray-node.sh" not in command:
            continue
        sources = [s.get("source") if isinstance(s, dict) else s for s in service.get("secrets") or []]
        env = dict(_environment(service))
        if TOKEN_SECRET not in sources or env.get("VLSA_RAY_TOKEN_FILE") != SECRETS_DIR + TOKEN_SECRET:
            problems.append(f"{name}: the Ray token is not the secret file {SECRETS_DIR}{TOKEN_SECRET}")
        if "ray-node.sh worker" in command:
            for profile in service.get("profiles") or ["(none)"]:
                profiles[profile] = service
    if set(profiles) != {"cpu", "gpu"}:
        problems.append(f"Ray worker profiles are {sorted(profiles)}, not ['cpu', 'gpu']")
    if "gpu" in profiles and not any(
        d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])
        for d in _devices(profiles["gpu"])
    ):
        problems.append("the gpu worker reserves no NVIDIA device (driver nvidia, capabilities [gpu])")
    if "cpu" in profiles and _devices(profiles["cpu"]):
        problems.append("the cpu worker reserves devices: it must run on any machine")
    return problems


CHECKS: dict[str, Check] = {
    "schema": schema_problems,
    "ports": port_problems,
    "secrets": secret_problems,
    "scripts": script_problems,
    "health": health_problems,
    "volumes": volume_problems,
    "ray": ray_problems,
}


def interpolated(text: str) -> dict[str, bool]:
    """The variables a compose file (its YAML text) interpolates, each with whether it is required (no
    default). Comments are not interpolated, keys and values are."""
    found: dict[str, bool] = {}
    hits = (
        hit for string in _strings(yaml.safe_load(text), keys=True) for hit in _INTERPOLATION.findall(string)
    )
    for braced, modifier, bare in hits:
        required = not modifier.lstrip(":").startswith("-")
        found[braced or bare] = found.get(braced or bare, False) or required
    return found


def env_example_problems(compose_yaml: str, example_text: str) -> list[str]:
    """.env.example sets every required variable (empty for a secret: the user fills it in), shows every
    optional one (commented out is fine) and has none compose does not use."""
    assigned = dict(re.findall(rf"^({_VARIABLE})=(.*)$", example_text, flags=re.M))
    shown = set(assigned) | set(re.findall(rf"^#\s*({_VARIABLE})=", example_text, flags=re.M))
    used = interpolated(compose_yaml)
    problems = [
        f"{var}: required by docker-compose.yml, not set"
        for var, req in used.items()
        if req and var not in assigned
    ]
    problems += [f"{var}: interpolated by docker-compose.yml, missing" for var in used if var not in shown]
    problems += [f"{var}: not used by docker-compose.yml" for var in sorted(shown - set(used))]
    problems += [
        f"{var}: a secret with a value in the committed example"
        for var, value in assigned.items()
        if _is_secret_name(var) and not var.endswith("_PATH") and value.strip()
    ]
    return problems


def gitignore_problems(gitignore_text: str) -> list[str]:
    lines = {line.strip() for line in gitignore_text.splitlines()}
    problems = [] if lines & {".env", "/.env"} else [".env is not in .gitignore"]
    if lines & {".env*", "/.env*", "*.example", ".env.example", "/.env.example"}:
        problems.append(".gitignore ignores .env.example, the committed example")
    return problems


def image_problems(dockerfile_text: str, dockerignore_text: str) -> list[str]:
    """The image copies infra/scripts to where the services run them (and the build context sends them), and
    runs as a user other than root."""
    problems = []
    if not re.search(
        rf"^COPY\s+(--\S+\s+)*infra/scripts/?\s+{IMAGE_SCRIPTS.rstrip('/')}/?\s*$", dockerfile_text, re.M
    ):
        problems.append(f"the Dockerfile does not COPY infra/scripts to {IMAGE_SCRIPTS}")
    sent = dockerignore_text.splitlines()
    problems += [
        f".dockerignore does not send {path}"
        for path in ("!infra/scripts/", "!platform/")
        if path not in sent
    ]
    users = re.findall(r"^USER\s+(\S+)", dockerfile_text, re.M)
    if not users or users[-1] in ("root", "0") or users[-1].startswith(("root:", "0:")):
        problems.append("the image runs as root (no USER, or USER root last)")
    return problems
