"""The PostgreSQL backend's health check: no round trip while the connection is idle and alive, and a
connection the server ended is replaced before a request uses it."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

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


def test_idle_connection_is_checked_without_a_query():
    pid = _backend_pid()
    connection.health_check_done = False
    connection.close_if_health_check_failed()  # what Django does before a request's first query
    assert connection.connection is not None
    # The backend's last statement is still pg_backend_pid(): the check sent nothing (Django's own
    # check would leave `SELECT 1` there).
    with psycopg.connect(_dsn(), autocommit=True) as admin:
        last = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
    assert last == "SELECT pg_backend_pid()"


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


def test_connection_in_a_transaction_gets_the_real_check():
    connection.ensure_connection()
    raw = connection.connection
    raw.execute("BEGIN")
    try:
        assert connection.is_usable()
    finally:
        raw.execute("ROLLBACK")
