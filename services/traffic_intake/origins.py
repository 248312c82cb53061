"""Web origins, as browsers send them in ``Origin`` and as browser sources allow them.
Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_ORIGINS = 50
DEFAULT_PORTS = {"http": 80, "https": 443}


def normal_origin(text: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, default ports dropped; None for anything
    else (a path, a query, credentials, a scheme other than http(s), ``null``)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"
