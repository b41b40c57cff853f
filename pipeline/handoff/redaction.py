"""Credentials out of everything the pipeline prints or records: a URI's password becomes `***`."""

from __future__ import annotations

import re

# scheme://user:password@host... (HTTP, SQLAlchemy database URIs, ...): the password is what lies between the
# first ':' after '//' and the last '@' before the host.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):(?P<password>[^\s@/]*(?:@[^\s@/]*)*)@")
MASK = "***"


def redact_credentials(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` in it replaced by `***`."""
    return _USERINFO.sub(lambda match: f"{match['head']}:{MASK}@", text)
