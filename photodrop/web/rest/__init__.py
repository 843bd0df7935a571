"""The REST shim: Apertur-compatible ``/v1`` (and ``/api/v1``) endpoints over the resolvers.

Importing this package registers every endpoint on ``api``.
"""

from photodrop.web.rest import delivery, keys, projects, pull, sessions, stats, tus, upload_sessions
from photodrop.web.rest.common import PREFIXES, UNLOCK_COOKIE, api, openapi, set_unlock_cookie

__all__ = [
    "PREFIXES",
    "UNLOCK_COOKIE",
    "api",
    "delivery",
    "keys",
    "openapi",
    "projects",
    "pull",
    "sessions",
    "stats",
    "set_unlock_cookie",
    "tus",
    "upload_sessions",
]
