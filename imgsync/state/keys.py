"""State keys: a destination is identified by what it is, not by the remote's name.

* a folder: ``local:`` + its real path (symlinks resolved);
* a host: ``<type>:`` + its normalised base URL + ``#`` + an account fingerprint.

The base URL is normalised (scheme and host lower-cased, default port dropped, repeated and
trailing slashes removed), so renaming a remote, adding an alias or fixing a trailing slash
keeps the key, and nothing is uploaded again. The account is a short one-way fingerprint
of the credential (never the credential itself): the same site under another account is
another destination. A new token for the same account counts as another account (imgsync
cannot ask every host who a token belongs to); its first copy then finds what the host
already has only by uploading, so rotate tokens knowingly.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str) -> str:
    """``HTTPS://Example.COM:443//chv/`` -> ``https://example.com/chv``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = re.sub(r"/+", "/", parts.path).rstrip("/")
    return f"{scheme}://{netloc}{path}"


def account_fingerprint(token: str | None) -> str:
    """A short, one-way label for the account a credential opens (``-`` without one)."""
    if not token:
        return "-"
    return hashlib.sha256(b"imgsync-account\0" + token.encode()).hexdigest()[:16]


def host_key(kind: str, base_url: str, token: str | None) -> str:
    """The state key of a host destination."""
    return f"{kind}:{normalise_url(base_url)}#{account_fingerprint(token)}"
