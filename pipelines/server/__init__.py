"""The platforms' HTTP service (FastAPI): static feeds and tiles, the CAMARA check, bulk check,
acknowledgements; platform tokens (stored hashed), the audit log and rate limits; Prometheus
metrics at ``/metrics`` (scope ``metrics``) and one masked log line per request. It reads only
the published query snapshot, never the state file.

``create_app`` builds the app and ``serve`` runs it (``recycle serve``); ``openapi_bytes`` is
the committed ``schemas/openapi.json``. ``TokenStore``, ``parse_scopes`` and ``DEFAULT_SCOPES``
are what ``recycle platform`` manages tokens with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.lazy import lazy_attributes
from pipelines.server.platforms import DEFAULT_SCOPES, SCOPES, TokenStore, parse_scopes, utc_now

if TYPE_CHECKING:
    from pipelines.server.app import create_app, serve
    from pipelines.server.openapi import openapi_bytes

# The app's names load on first use. pipelines.compliance.notifications imports
# pipelines.server.platforms and the app imports notifications, so an eager import here is
# circular (ImportError when notifications is imported first); and `recycle` imports this
# package for every command, which need not load FastAPI, pyarrow and numpy.
_LAZY = {
    "create_app": "pipelines.server.app",
    "serve": "pipelines.server.app",
    "openapi_bytes": "pipelines.server.openapi",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "DEFAULT_SCOPES",
    "SCOPES",
    "TokenStore",
    "create_app",
    "openapi_bytes",
    "parse_scopes",
    "serve",
    "utc_now",
]
