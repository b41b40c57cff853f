"""pipeline/handoff/redaction.py: the password of any scheme://user:password@ in a text becomes ***."""

from __future__ import annotations

import pytest

from pipeline.handoff.redaction import redact_credentials


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:secret@host:5000/api", "http://user:***@host:5000/api"),
        ("postgresql://mlflow:p%40ss@db.internal/mlflow", "postgresql://mlflow:***@db.internal/mlflow"),
        ("https://user:pa@ss@host/", "https://user:***@host/"),  # an unescaped @ in the password
        ("http://:token@host/", "http://:***@host/"),
        ("run at http://a:b@h:1 and s3://k:s@bucket/p", "run at http://a:***@h:1 and s3://k:***@bucket/p"),
        ("http://host:5000/path", "http://host:5000/path"),  # a port is not a password
        ("http://user@host/", "http://user@host/"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("no uri at all: a:b@c", "no uri at all: a:b@c"),
    ],
)
def test_passwords_are_masked_and_nothing_else_changes(text, expected):
    assert redact_credentials(text) == expected
