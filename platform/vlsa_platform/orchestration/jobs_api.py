"""Talking to a cluster's Ray Jobs API: the address, token authentication, a client with bounded requests
(:func:`connect`), and the errors, each with the exit status the CLI gives for it. What is sent through it (a
submission as a Ray job) is :mod:`.jobs`.

Addresses (:func:`parse_address`):

- ``http://HOST:PORT`` / ``https://HOST[:PORT][/PREFIX]``: the head's dashboard, which serves the Jobs API
  (port 8265 unless the head was started with another ``--dashboard-port``);
- ``ray://HOST[:PORT]``: a Ray Client address. It is mapped to ``http://HOST:8265`` (the dashboard's default
  port on that host; the Ray Client port is not used). Ray's SDK would accept ``ray://`` itself, but only by
  opening a whole Ray Client session (``ray.init("ray://…")``, which needs the client server, the same Python
  and Ray versions here and there, and waits long on a dead host) just to ask the head for its dashboard URL,
  which is often an address internal to the cluster. Use ``http://HOST:PORT`` for another dashboard port.

Plain ``http://`` (and ``ray://``, which maps to it) to a host that is not this machine's loopback is refused
(:func:`check_transport`, :class:`InsecureAddressError`, exit 2) unless the user says ``--insecure``: the token
and the job's files would cross the network in clear. Tunnel instead (``ssh -L 8265:localhost:8265 HEAD``, then
``--address http://127.0.0.1:8265``) or use ``https://``.

``RAY_ADDRESS`` and ``RAY_API_SERVER_ADDRESS`` would silently replace the address in Ray's SDK; here the
address given is the address used.

Token authentication (a cluster started with ``RAY_AUTH_MODE=token``): the token is read, like Ray reads it,
from ``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``, and sent as
``Authorization: Bearer …`` on every request. Unlike Ray's SDK it is sent whether or not ``RAY_AUTH_MODE=token``
is set on this machine (that variable says how the *local* Ray runs); ``RAY_AUTH_MODE=disabled`` only keeps
the default file ``~/.ray/auth_token`` from being sent. A cluster without token auth ignores the header.

Every request has a connect timeout (:data:`CONNECT_TIMEOUT_S`, 10 s) and a read timeout
(:data:`READ_TIMEOUT_S`; :data:`CHECK_READ_TIMEOUT_S` for the first contact). The first contact is tried
:data:`CONNECT_ATTEMPTS` (3) times with 1 s and 2 s pauses: a refused connection or unknown host fails in about
3 s, a host that does not answer in about 33 s, one that accepts but never answers in at most 63 s.
Waiting for the cluster to offer a trial's resources is the driver's, bounded by the spec's
``resource_timeout_s`` (:func:`.submission.wait_for_resources`).

Errors and the exit status the CLI gives for each (``exit_code`` on every error class here; the codes of
:mod:`vlsa_platform.exits`; 0, 1 and 3 are also what :attr:`.jobs.JobState.exit_code` says of a job):

====  =====================================================================================================
 0    ``EXIT_OK`` — the job succeeded
 1    ``EXIT_FAILED`` — the job failed or was stopped (a trial failed, the driver crashed…), or the Jobs
      API answered an unexpected error (:class:`JobsAPIError`)
 2    ``EXIT_CONFIG`` — bad input: :class:`AddressError` (``--address``; :class:`InsecureAddressError` plain
      http to another machine without ``--insecure``), :class:`RemoteSettingsError`
      (``tracking.tracking_uri`` / ``storage.path`` a remote cluster cannot reach), :class:`JobNotFoundError`
 3    ``EXIT_RESOURCES`` — the job's driver found that the cluster cannot run a trial (no node of the
      accelerator class, too few CPUs/GPUs) within its resource timeout (the driver, :mod:`.entry`, exits 3)
 4    ``EXIT_UNREACHABLE`` — :class:`ClusterUnreachableError`: no Ray dashboard answers at the address
 5    ``EXIT_AUTH`` — :class:`ClusterAuthError`: the cluster wants a token and got none or a wrong one
 130  ``EXIT_INTERRUPTED`` — Ctrl-C while following a job (the job keeps running)
====  =====================================================================================================
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config.errors import ConfigError
from ..exits import EXIT_AUTH, EXIT_CONFIG, EXIT_FAILED, EXIT_UNREACHABLE
from ..redact import redact_uri
from .submission_types import SubmissionSpec

DEFAULT_DASHBOARD_PORT = 8265
CONNECT_TIMEOUT_S = 10.0
"""TCP connect timeout of every request to the dashboard."""
READ_TIMEOUT_S = 60.0
"""How long one request may wait for the dashboard's answer (package uploads included)."""
CHECK_READ_TIMEOUT_S = 10.0
"""Read timeout of the first contact (GET ``/api/version``)."""
CONNECT_ATTEMPTS = 3
"""Tries of the first contact (pauses of 1 s, then 2 s, between them)."""
AGENT_WAIT_S = 30.0
"""How long a submission waits for a just-started head's job agent."""
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
_TOKEN_SOURCES = f"${TOKEN_ENV}, the file named by ${TOKEN_PATH_ENV}, or ~/.ray/auth_token"

# ------------------------------------------------------------------------------------------------- errors


class AddressError(ValueError):
    """A malformed ``--address``; the message names the option and what it expects."""

    exit_code = EXIT_CONFIG


class InsecureAddressError(AddressError):
    """Plain ``http://`` (or ``ray://``) to another machine without ``--insecure``: the message says how to
    tunnel or use https."""


class RemoteSettingsError(ConfigError, ValueError):
    """Settings a cluster on another machine cannot use (a local tracking store or run folder); one line per
    problem, each starting with the field (``tracking.tracking_uri: …``)."""

    exit_code = EXIT_CONFIG


class ClusterAccessError(RuntimeError):
    """A problem talking to the cluster's Jobs API (the base of the errors below; ``exit_code`` says the
    CLI's exit status)."""

    exit_code = EXIT_FAILED


class ClusterUnreachableError(ClusterAccessError):
    """No Ray dashboard answers at the address (refused, unknown host, timed out, not a Ray dashboard)."""

    exit_code = EXIT_UNREACHABLE


class ClusterAuthError(ClusterAccessError):
    """The cluster requires a token and none was sent, or it rejected the one sent."""

    exit_code = EXIT_AUTH


class JobNotFoundError(ClusterAccessError, LookupError):
    """No job with that id on the cluster."""

    exit_code = EXIT_CONFIG


class JobsAPIError(ClusterAccessError):
    """The Jobs API answered with an unexpected error."""


class _NoAgentYet(JobsAPIError):
    """The head has no job agent yet (just started)."""


# ------------------------------------------------------------------------------------------------ address

_EXPECTED = (
    "expected http://HOST:PORT (the head's dashboard, port 8265 by default), https://HOST[:PORT][/PREFIX] "
    "or ray://HOST[:PORT]"
)


def _bad(address: str, why: str) -> AddressError:
    return AddressError(f"--address {address!r}: {why}; {_EXPECTED}")


def parse_address(address: str) -> str:
    """The Jobs API URL of a cluster address: ``http(s)://…`` as given (without a trailing ``/``),
    ``ray://HOST[:PORT]`` -> ``http://HOST:8265``. Raises :class:`AddressError` for anything else."""
    if not isinstance(address, str) or not address.strip():
        raise _bad(str(address or ""), "empty")
    text = address.strip()
    if "://" not in text:
        raise _bad(address, "no scheme")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise _bad(address, str(err)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ray"):
        raise _bad(address, f"unsupported scheme {parts.scheme!r}")
    if not parts.hostname:
        raise _bad(address, "no host")
    if parts.username is not None or parts.password is not None:
        raise _bad(
            address, f"credentials do not go in the address (the Ray token is read from {_TOKEN_SOURCES})"
        )
    if parts.query or parts.fragment:
        raise _bad(address, "a query or fragment is not part of a cluster address")
    host = parts.hostname
    netloc_host = f"[{host}]" if ":" in host else host
    if scheme == "ray":
        if parts.path not in ("", "/"):
            raise _bad(address, "a ray:// address has no path")
        return f"http://{netloc_host}:{DEFAULT_DASHBOARD_PORT}"
    if port == 0:
        raise _bad(address, "port 0")
    if scheme == "http" and port is None:
        raise _bad(address, f"no port (the dashboard listens on {DEFAULT_DASHBOARD_PORT} by default)")
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc_host}{'' if port is None else f':{port}'}{path}"


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(address: str) -> bool:
    """Whether the cluster address is this machine's loopback (``localhost``, ``127.0.0.0/8``, ``::1``): such a
    cluster shares this machine's folders and local services. Raises :class:`AddressError` if malformed."""
    return _is_loopback_host(urlsplit(parse_address(address)).hostname)


def check_transport(address: str, *, insecure: bool = False) -> str:
    """The Jobs API URL of ``address`` (:func:`parse_address`), if requests to it may carry the token:
    ``https://`` anywhere, plain ``http://`` to this machine's loopback, anything with ``insecure``.

    Raises:
        AddressError: a malformed address.
        InsecureAddressError: plain http to another machine, ``insecure`` not given.
    """
    url = parse_address(address)
    parts = urlsplit(url)
    if insecure or parts.scheme == "https" or _is_loopback_host(parts.hostname):
        return url
    port = parts.port or DEFAULT_DASHBOARD_PORT
    raise InsecureAddressError(
        f"--address {address.strip()!r} is plain http to {parts.hostname}, another machine: the Ray token and "
        f"the job's files would travel in clear. Tunnel to the head (`ssh -L {port}:localhost:{port} "
        f"{parts.hostname}`, then --address http://127.0.0.1:{port}), or give the dashboard's https:// address, "
        "or accept it with --insecure (a network you trust)"
    )


def check_remote_settings(spec: SubmissionSpec, address: str) -> None:
    """Before anything is sent: the tracking URI holds no password (it would travel in the job's files, which
    the cluster keeps; the password comes from the nodes' own ``$MLFLOW_TRACKING_PASSWORD``), and a cluster on
    another machine must be able to reach the tracking store and the run storage. On a loopback address
    everything local is shared, so any store or folder goes.

    Raises:
        AddressError: a malformed address.
        RemoteSettingsError: one line per problem, naming ``tracking.tracking_uri``, ``storage.path`` or the
            environment variable at fault.
    """
    url = parse_address(address)
    uri = (spec.tracking_uri or "").strip()
    problems = _password_problem(uri)
    if _is_loopback_host(urlsplit(url).hostname):
        if problems:
            raise RemoteSettingsError(problems)
        return
    where = f"the cluster at {address} runs on another machine"
    set_it = (
        "set tracking.tracking_uri (e.g. --set tracking.tracking_uri=http://mlflow.example:5000) or "
        "$MLFLOW_TRACKING_URI to an MLflow server the cluster can reach"
    )
    if not uri:
        problems.append(
            f"tracking.tracking_uri: not set, so runs would go to the local MLflow store in {spec.workdir}, "
            f"which {where} cannot reach; {set_it}"
        )
    elif uri.split(":", 1)[0] in ("databricks", "databricks-uc"):
        pass  # a hosted server, reached with the cluster nodes' own credentials
    elif "://" not in uri or uri.startswith(("sqlite:", "file:")):
        problems.append(
            f"tracking.tracking_uri: {redact_uri(uri)!r} is a store on this machine, which {where} cannot "
            f"reach; {set_it}"
        )
    elif _is_loopback_host(urlsplit(uri).hostname):
        problems.append(
            f"tracking.tracking_uri: {redact_uri(uri)!r} is this machine's loopback, which on the cluster "
            f"means the cluster node itself; {set_it}"
        )
    root = (spec.storage_root or "").strip()
    if not root.startswith("s3://"):
        problems.append(
            f"storage.path: {root or '(not set)'!s} is a folder on this machine, which {where} cannot reach; "
            "set storage.path to an s3:// location (e.g. --set storage.path=s3://BUCKET/PREFIX)"
        )
    else:
        for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            endpoint = os.environ.get(var, "").strip()
            if endpoint and _is_loopback_host(urlsplit(endpoint).hostname):
                problems.append(
                    f"storage.path: its S3 endpoint ${var}={redact_uri(endpoint)} is this machine's loopback, "
                    "which the cluster cannot reach; point it at an S3 endpoint the cluster can reach"
                )
                break
    if problems:
        raise RemoteSettingsError(problems)


def _password_problem(uri: str) -> list[str]:
    """The problem of a tracking URI that holds a password (none when it holds none)."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        return []
    if not password:
        return []
    return [
        f"tracking.tracking_uri (or $MLFLOW_TRACKING_URI): {redact_uri(uri)!r} holds a password, which would "
        "travel to the cluster in the job's files; give the URI without user name and password, and set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment of the cluster's nodes "
        '(docs/submitting.md, "Secrets")'
    ]


# ------------------------------------------------------------------------------------------- token, client


@dataclass(frozen=True)
class Token:
    """A Ray token and where it came from."""

    value: str | None = field(repr=False)
    source: str
    """Where it was read (for messages; never the token itself)."""


def resolve_token() -> Token:
    """The Ray token to send: ``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else
    ``~/.ray/auth_token`` (not with ``RAY_AUTH_MODE=disabled``). Raises :class:`ClusterAuthError` when
    ``$RAY_AUTH_TOKEN_PATH`` names a file that cannot be read or is empty."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Token(value, f"${TOKEN_ENV}")
    path_text = os.environ.get(TOKEN_PATH_ENV, "").strip()
    if path_text:
        path = Path(path_text).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as err:
            raise ClusterAuthError(
                f"cannot read the Ray token file ${TOKEN_PATH_ENV}={path_text}: {err.strerror or err}"
            ) from None
        if not value:
            raise ClusterAuthError(f"the Ray token file ${TOKEN_PATH_ENV}={path_text} is empty")
        return Token(value, f"${TOKEN_PATH_ENV} ({path_text})")
    default = Path.home() / ".ray" / "auth_token"
    if os.environ.get(AUTH_MODE_ENV, "").strip().lower() != "disabled" and default.is_file():
        try:
            value = default.read_text().strip()
        except OSError:
            value = ""
        if value:
            return Token(value, str(default))
    return Token(None, "none")


def _client_class() -> type:
    """:class:`ray.job_submission.JobSubmissionClient` with bounded requests and this module's errors
    (built on first use, so importing this module does not import Ray)."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is not None:
        return _CLIENT_CLASS

    import ray
    import requests
    from ray.dashboard.modules.dashboard_sdk import SubmissionClient
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    class _Client(JobSubmissionClient):
        def __init__(self, url: str, address: str, token: Token, timeouts: tuple[float, float]) -> None:
            # JobSubmissionClient.__init__ lets $RAY_ADDRESS / $RAY_API_SERVER_ADDRESS replace the address (and
            # would open a Ray Client session for ray://); the address given is the one used here.
            self._vlsa_address = address
            self._vlsa_token = token
            self._vlsa_timeouts = timeouts
            self._client_ray_version = ray.__version__
            headers = {"Authorization": f"Bearer {token.value}"} if token.value else {}
            SubmissionClient.__init__(self, address=url, headers=headers)

        def check(self) -> None:
            self._check_connection_and_version(
                min_version="2.0",
                version_error_message=f"The cluster's Jobs API is too old for Ray {ray.__version__} here.",
            )

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._vlsa_timeouts)
            try:
                return super()._do_request(method, endpoint, **kwargs)
            except AuthenticationError as err:
                raise _auth_error(self._address, self._vlsa_token, str(err)) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
                raise ClusterUnreachableError(
                    f"cannot reach the Ray cluster at {self._address} (--address {self._vlsa_address}): "
                    f"{_reason(err)}"
                ) from None

        def submit_job(self, **kwargs: Any) -> str:
            # A head that has just started has no job agent for a few seconds ("No available agent to submit
            # job, please try again later"): nothing was submitted, so trying again is safe.
            deadline = time.monotonic() + AGENT_WAIT_S
            while True:
                try:
                    return str(super().submit_job(**kwargs))
                except _NoAgentYet as err:
                    if time.monotonic() >= deadline:
                        raise JobsAPIError(
                            f"{err} — the cluster had no job agent ready for {AGENT_WAIT_S:.0f}s"
                        ) from None
                    time.sleep(1.0)

        def _raise_error(self, r: Any) -> None:
            text = " ".join((r.text or "").split())[:2000]
            if r.status_code >= 500 and "No available agent" in text:
                raise _NoAgentYet(f"the Ray cluster at {self._address} answered {r.status_code}: {text}")
            if r.status_code == 404:
                raise JobNotFoundError(f"{text or 'not found'} (on the Ray cluster at {self._address})")
            raise JobsAPIError(
                f"the Jobs API of the Ray cluster at {self._address} answered {r.status_code}: {text}"
            )

    _CLIENT_CLASS = _Client
    return _Client


_CLIENT_CLASS: type | None = None


def _reason(err: BaseException) -> str:
    """A short cause of a requests error (the innermost reason, not the whole retry story)."""
    text = str(err)
    for pattern, meaning in (
        (r"Connection refused", "connection refused"),
        (
            r"Name or service not known|nodename nor servname|NameResolutionError|Temporary failure in name "
            r"resolution|No address associated",
            "unknown host",
        ),
        (r"timed out|ConnectTimeout|ReadTimeout", "timed out"),
        (r"Connection reset|RemoteDisconnected|BadStatusLine", "connection closed by the other side"),
    ):
        if re.search(pattern, text):
            return meaning
    return text[:300]


def _auth_error(url: str, token: Token, detail: str) -> ClusterAuthError:
    if token.value is None or detail.startswith("Authentication required"):
        return ClusterAuthError(
            f"the Ray cluster at {url} requires a token (token authentication) and none was sent: set "
            f"${TOKEN_ENV}, or ${TOKEN_PATH_ENV} to a file holding it, or put it in ~/.ray/auth_token "
            "(`ray get-auth-token` on the head prints it)"
        )
    return ClusterAuthError(
        f"the Ray cluster at {url} rejected the token read from {token.source}; the token is read from "
        f"{_TOKEN_SOURCES} (in that order): check that it is the cluster's (`ray get-auth-token` on the head)"
    )


def connect(
    address: str,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    attempts: int = CONNECT_ATTEMPTS,
) -> Any:
    """A Jobs SDK client (:class:`ray.job_submission.JobSubmissionClient`) for the cluster at ``address``,
    checked to answer (GET ``/api/version``, which needs the token on a cluster with token auth).

    Raises:
        AddressError: a malformed address.
        ClusterUnreachableError: nothing (or not a Ray dashboard) answers, after ``attempts`` tries.
        ClusterAuthError: the token is missing or wrong.
    """
    url = parse_address(address)
    token = resolve_token()
    # /api/version answers at once: a dashboard that does not is as good as unreachable.
    check_timeouts = (connect_timeout_s, min(read_timeout_s, CHECK_READ_TIMEOUT_S))
    client = _client_class()(url, address, token, check_timeouts)
    started = time.monotonic()
    last: ClusterAccessError | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(float(attempt))
        try:
            client.check()
            client._vlsa_timeouts = (connect_timeout_s, read_timeout_s)
            return client
        except (ClusterAuthError, JobNotFoundError, JobsAPIError):
            raise
        except ClusterUnreachableError as err:
            last = err
        except (RuntimeError, ValueError) as err:
            # Something answers but not a Ray dashboard (404 on /api/version, not JSON, an HTTP error page).
            last = ClusterUnreachableError(
                f"{url} (--address {address}) answers, but not as a Ray dashboard's Jobs API "
                f"({' '.join(str(err).split())[:300]}); give the head's dashboard address (port 8265 by default)"
            )
            break
    assert last is not None
    raise ClusterUnreachableError(
        f"{last} — gave up after {attempt + 1} tr{'ies' if attempt else 'y'} in {time.monotonic() - started:.0f}s; "
        f"is the head running, and its dashboard (port {DEFAULT_DASHBOARD_PORT} by default) reachable from here?"
    )


__all__ = [
    "CONNECT_ATTEMPTS",
    "CONNECT_TIMEOUT_S",
    "AddressError",
    "ClusterAccessError",
    "ClusterAuthError",
    "ClusterUnreachableError",
    "InsecureAddressError",
    "JobNotFoundError",
    "JobsAPIError",
    "RemoteSettingsError",
    "Token",
    "check_remote_settings",
    "check_transport",
    "connect",
    "is_loopback",
    "parse_address",
    "resolve_token",
]
