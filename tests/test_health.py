"""GET /healthz reports the database and Redis, and which one is down."""

from __future__ import annotations

import pytest
from django.db import connections


@pytest.mark.django_db
def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_redis_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["database"] == "ok"
    assert body["redis"].startswith("error: ConnectionError")


@pytest.mark.django_db(transaction=True)
def test_healthz_database_down(client):
    connection = connections["default"]
    if connection.vendor == "sqlite":
        pytest.skip("needs a database server to take down; CI runs on PostgreSQL")
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="1")  # a port nothing listens on
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    body = response.json()
    assert body["database"].startswith("error: OperationalError") and body["redis"] == "ok"
