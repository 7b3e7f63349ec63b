"""Secrets out of what the platform shows and records: one definition of what is masked, used by every sink
(MLflow params, tags and artifacts; the terminal; the submission's log; error messages).

Masked, as :data:`MASK`:

- the password of a URI's user-info (``http://user:***@host:5000``; the user name stays) and the values of
  its query parameters named like secrets (``?token=***``, ``&X-Amz-Signature=***``, ``?key=***``);
- in nested mappings and lists (:func:`redact`), the value of every key named like a secret
  (:func:`is_secret_key`: ``password``, ``secret``, ``token``, ``api_key``, ``access_key``…, any case), and every
  string value as free text;
- in free text (:func:`redact_text`), each URI with a password or secret query parameters, and the current value
  of each variable of :data:`SECRET_ENV` set in this process (values shorter than :data:`MIN_SECRET_LEN` are
  left: masking them would mask ordinary words).

Only what is shown or recorded is masked; what the platform uses (a tracking URI it connects to, the config a
run's digest is computed from) stays as given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "RAY_AUTH_TOKEN",
)
"""Variables whose current values are masked wherever they appear in free text."""
MIN_SECRET_LEN = 6
"""Shorter values of :data:`SECRET_ENV` are not searched for in free text."""

_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "credential", "credentials", "apikey", "signature"}
)
"""A key holding one of these words (split at ``_``, ``-``, ``.``, spaces and camelCase) is a secret's."""
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("account", "key")})
"""…and so is one holding one of these pairs of words in a row (``aws_secret_access_key``, ``apiKey``)."""
_QUERY_WORDS = frozenset({"key", "sig", "code"})
"""In a URI's query, these names alone are secrets too (``?key=…``, ``?sig=…``, an OAuth ``?code=…``)."""
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
"""Where a URI may be in free text (each candidate is then read by ``urllib.parse``)."""


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [word for word in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if word]


def is_secret_key(key: Any, *, query: bool = False) -> bool:
    """Whether a mapping key (or, with ``query``, a URI query parameter) names a secret: ``password``,
    ``MLFLOW_TRACKING_TOKEN``, ``aws_secret_access_key``, ``apiKey``; not ``tokenizer`` or ``max_tokens``."""
    words = _words(str(key))
    if any(word in _SECRET_WORDS for word in words):
        return True
    if query and any(word in _QUERY_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in pairwise(words))


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user-info and its secret query values masked; anything else, and
    anything ``urllib.parse`` cannot read, as given."""
    try:
        parts = urlsplit(uri)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return uri
    netloc, changed = parts.netloc, False
    if password:
        user_info, _, host = parts.netloc.rpartition("@")
        user = user_info.split(":", 1)[0]
        netloc, changed = f"{user}:{MASK}@{host}", True
    text_query = parts.query
    if any(is_secret_key(name, query=True) and value for name, value in query):
        masked = [
            (name, MASK if is_secret_key(name, query=True) and value else value) for name, value in query
        ]
        text_query, changed = urlencode(masked, safe="*"), True
    if not changed:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, text_query, parts.fragment))


def _env_secrets() -> list[str]:
    values = {os.environ.get(name, "").strip() for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact_text(text: str) -> str:
    """Free text (a log line, an error message) with every URI's secrets (:func:`redact_uri`) and the current
    values of :data:`SECRET_ENV` masked."""
    if not text:
        return text
    for value in _env_secrets():
        text = text.replace(value, MASK)
    if "://" in text:
        text = _URI.sub(lambda match: redact_uri(match.group(0)), text)
    return text


def redact(data: Any) -> Any:
    """A copy of ``data`` (mappings, lists, tuples, scalars, nested) with the value of every key named like a
    secret (:func:`is_secret_key`) masked and every string as :func:`redact_text`. Keys are kept; a secret
    key whose value is empty or ``None`` keeps it (nothing to hide, and it shows the key is unset)."""
    if isinstance(data, Mapping):
        return {
            key: MASK if is_secret_key(key) and value not in (None, "") else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact(value) for value in data]
    if isinstance(data, tuple):
        return tuple(redact(value) for value in data)
    if isinstance(data, str):
        return redact_text(data)
    return data


__all__ = ["MASK", "MIN_SECRET_LEN", "SECRET_ENV", "is_secret_key", "redact", "redact_text", "redact_uri"]
