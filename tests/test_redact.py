"""What :mod:`vlsa_platform.redact` masks: URI passwords and secret query values, values under keys named like
secrets in nested data, URIs and secret variables' values in free text — and what it leaves alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.redact import MASK, SECRET_ENV, is_secret_key, redact, redact_text, redact_uri

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_secret_env(monkeypatch):
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("https://alice:p%40ss@h.example/prefix/api", "https://alice:***@h.example/prefix/api"),
        ("http://:only-password@[::1]:5000/", "http://:***@[::1]:5000/"),
        ("postgresql://u:pw@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
        ("https://h.example/x?token=abc&page=2", "https://h.example/x?token=***&page=2"),
        (
            "https://h/x?Password=a&api_key=b&key=c&sig=d",
            "https://h/x?Password=***&api_key=***&key=***&sig=***",
        ),
        (
            "https://b.s3/k?X-Amz-Signature=f00&X-Amz-Credential=AKIA",
            "https://b.s3/k?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
    ],
)
def test_uri_secrets_are_masked_and_the_rest_kept(uri, shown):
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        "http://mlflow.example:5000",
        "ssh://git@host/repo",  # a user name alone is not a secret
        "sqlite:////tmp/x/mlruns.db",
        "s3://bucket/prefix?versionId=3",
        "https://h/x?token=",  # nothing to hide
        "http://[::1",  # urllib cannot read it: as given
        "not a uri",
    ],
)
def test_uris_without_secrets_are_unchanged(uri):
    assert redact_uri(uri) == uri


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "MLFLOW_TRACKING_PASSWORD",
        "token",
        "auth_token",
        "secret",
        "aws_secret_access_key",
        "AWS_ACCESS_KEY_ID",
        "api_key",
        "apiKey",
        "api-key",
        "apikey",
        "private_key",
        "client.credentials",
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["tokenizer", "max_tokens", "generate_extra_tokens", "key", "sort_key", "passes", "secretary_id"]
)
def test_keys_that_only_look_like_secrets(key):
    assert not is_secret_key(key)


def test_a_bare_key_is_a_secret_only_in_a_query():
    assert is_secret_key("key", query=True) and not is_secret_key("key")


def test_nested_data_masks_secret_keys_and_uris_in_values():
    data = {
        "tracking": {"tracking_uri": "http://alice:s3cret@mlflow:5000", "log_every": 10},
        "services": [{"name": "db", "password": "hunter22", "hosts": ("http://u:pw@a:1", "b")}],
        "api_key": None,  # unset: shown as unset
        "token": "",
        "max_tokens": 512,
    }
    before = copy.deepcopy(data)
    masked = redact(data)
    assert masked == {
        "tracking": {"tracking_uri": "http://alice:***@mlflow:5000", "log_every": 10},
        "services": [{"name": "db", "password": MASK, "hosts": ("http://u:***@a:1", "b")}],
        "api_key": None,
        "token": "",
        "max_tokens": 512,
    }
    assert data == before  # a copy: the caller's data (a config whose digest resume checks) is untouched


def test_every_shipped_experiment_is_left_as_it_is():
    """No key of a real config is taken for a secret (``tokenizer``, ``generate_extra_tokens``…)."""
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        resolved = load_experiment(path, scale="tiny").resolved()
        assert redact(resolved) == resolved, path.name


def test_free_text_masks_uris_where_they_stand():
    text = (
        "--set tracking.tracking_url=http://alice:s3cret@mlflow.example:5000: tracking.tracking_url: unknown "
        "key; also 'https://bob:pw2@h:1/x'), and (http://carol:pw3@h:2)."
    )
    shown = redact_text(text)
    assert all(secret not in shown for secret in ("s3cret", "pw2", "pw3"))
    assert "http://alice:***@mlflow.example:5000:" in shown and "(http://carol:***@h:2)." in shown
    assert redact_text("nothing here: http://mlflow:5000") == "nothing here: http://mlflow:5000"


def test_free_text_masks_the_values_of_secret_variables(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "tracking-pw-1")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0123456789abcdef")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "abc")  # too short to search for: ordinary text keeps it
    line = "botocore: key wJalrXUtnFEMI/K7MDENG refused; login tracking-pw-1; Bearer 0123456789abcdef; abc"
    assert redact_text(line) == f"botocore: key {MASK} refused; login {MASK}; Bearer {MASK}; abc"
    assert redact({"note": "pw tracking-pw-1"}) == {"note": f"pw {MASK}"}
