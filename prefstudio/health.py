"""Liveness of the services prefstudio needs: the database and Redis."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connections


def database_status() -> str:
    """'ok', or the reason the default database cannot answer a query."""
    connection = connections["default"]
    try:
        connection.ensure_connection()
        if not connection.is_usable():  # Django's own probe of a live connection
            connection.close()
            connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is reported
        first_line = next(iter(str(exc).strip().splitlines()), "")
        return f"error: {type(exc).__name__}: {first_line}"
    return "ok"


def redis_status(url: str | None = None) -> str:
    """'ok', or the reason Redis at `url` (default REDIS_URL) does not answer PING."""
    client = redis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"error: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return "ok"
