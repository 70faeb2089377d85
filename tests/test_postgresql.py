"""Django's own PostgreSQL backend with CONN_HEALTH_CHECKS: a persistent connection the server ended is
replaced before a request uses it."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's backend; CI runs on PostgreSQL")


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _dsn() -> str:
    s = connection.settings_dict
    return (
        f"host={s['HOST']} port={s['PORT'] or 5432} dbname={s['NAME']} "
        f"user={s['USER']} password={s['PASSWORD']}"
    )


def test_the_engine_is_djangos_own():
    assert type(connections["default"]).__module__ == "django.db.backends.postgresql.base"


def test_connection_ended_by_the_server_is_replaced():
    pid = _backend_pid()
    with psycopg.connect(_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        for _ in range(100):  # until the backend is gone
            if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is None:
                break
    connection.health_check_done = False
    connection.close_if_health_check_failed()  # what Django does before a request's first query
    assert _backend_pid() != pid  # a fresh connection, and the query went through
