"""``--address`` and what travels to the cluster: plain http to another machine is refused unless
``--insecure`` (:func:`~vlsa_platform.orchestration.jobs_api.check_transport`), a tracking URI holding a
password is refused, and the job's runtime environment carries no credential (:func:`.jobs.runtime_env`).
Nothing is contacted."""

from __future__ import annotations

import json

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.orchestration import jobs, jobs_api

from .test_jobs import PAPER, spec_for


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("http://127.0.0.1:8265", "http://127.0.0.1:8265"),
        ("http://127.8.9.10:9000", "http://127.8.9.10:9000"),
        ("http://localhost:8265/", "http://localhost:8265"),
        ("http://[::1]:8265", "http://[::1]:8265"),
        ("ray://localhost", "http://localhost:8265"),
        ("https://head.example", "https://head.example"),
        ("https://10.0.0.5:8443/ray", "https://10.0.0.5:8443/ray"),
    ],
)
def test_loopback_and_https_are_allowed(address, url):
    assert jobs_api.check_transport(address) == url


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("http://10.0.0.5:8265", "10.0.0.5", 8265),
        ("http://head.example:9000", "head.example", 9000),
        ("ray://head.example:10001", "head.example", 8265),  # read as http://head.example:8265
        ("http://[2001:db8::1]:8265", "2001:db8::1", 8265),
    ],
)
def test_plain_http_to_another_machine_is_refused_saying_how_to_tunnel(address, host, port):
    with pytest.raises(jobs_api.InsecureAddressError) as caught:
        jobs_api.check_transport(address)
    message = str(caught.value)
    assert "in clear" in message and "https://" in message and "--insecure" in message
    assert f"ssh -L {port}:localhost:{port} {host}" in message
    assert f"--address http://127.0.0.1:{port}" in message
    assert caught.value.exit_code == exits.EXIT_CONFIG
    assert jobs_api.check_transport(address, insecure=True) == jobs_api.parse_address(address)


def test_a_malformed_address_is_still_an_address_error_with_insecure():
    with pytest.raises(jobs_api.AddressError, match="no scheme"):
        jobs_api.check_transport("head:8265", insecure=True)


def test_submit_refuses_plain_http_before_anything_starts(tmp_path, capsys):
    status = cli.main(
        [
            "submit",
            str(PAPER),
            "--scale",
            "tiny",
            "--address",
            "http://10.0.0.5:8265",
            "--workdir",
            str(tmp_path),
        ]
    )
    assert status == exits.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("vlsa-platform submit: --address 'http://10.0.0.5:8265' is plain http")
    assert "ssh -L 8265:localhost:8265 10.0.0.5" in err
    assert not (tmp_path / "submissions").exists()


def test_a_tracking_uri_with_a_password_is_refused_for_any_cluster(tmp_path):
    spec = spec_for(tmp_path, tracking_uri="http://alice:s3cret@mlflow.example:5000")
    for address in ("http://127.0.0.1:8265", "https://head.example"):
        with pytest.raises(jobs_api.RemoteSettingsError) as caught:
            jobs_api.check_remote_settings(spec, address)
        message = str(caught.value)
        assert "s3cret" not in message and "http://alice:***@mlflow.example:5000" in message
        assert "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_PASSWORD" in message


CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIA-TEST-ID",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_SESSION_TOKEN": "aws-session-value",
    "MLFLOW_TRACKING_USERNAME": "alice",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-value",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-value",
}


def test_the_runtime_env_carries_no_credential(tmp_path, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@mlflow.example:5000")
    env = jobs.runtime_env(spec_for(tmp_path), tmp_path)
    text = json.dumps(env)
    assert all(value not in text for value in [*CREDENTIALS.values(), "s3cret"])
    assert set(jobs.NODE_ENV) == set(CREDENTIALS) and not set(jobs.NODE_ENV) & set(env["env_vars"])
    assert "MLFLOW_TRACKING_URI" not in env["env_vars"]  # it holds a password: left out
    assert env["env_vars"]["AWS_ENDPOINT_URL_S3"] == "https://s3.example"
    assert env["env_vars"]["AWS_DEFAULT_REGION"] == "eu-west-1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    variables = jobs.runtime_env(spec_for(tmp_path), tmp_path)["env_vars"]
    assert variables["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
