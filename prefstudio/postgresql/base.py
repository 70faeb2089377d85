"""Django's PostgreSQL backend with a health check that needs no round trip while nothing is amiss.

With CONN_HEALTH_CHECKS Django sends `SELECT 1` before the first query of every request that reuses a
connection: one round trip in ten of the workbench's judge request. An idle connection has nothing to
read, so this check asks the socket first: when nothing arrived, the connection is as alive as the
kernel knows and the check is done. A server that restarts or terminates the backend sends its FATAL
message and closes the socket, which makes it readable; then (and for anything else unexpected on the
wire) Django's real check runs and a dead connection is replaced before the request uses it.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            try:
                poller = select.poll()
                poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
                if not poller.poll(0):
                    return True
            except (OSError, ValueError):  # no socket to ask: let the real check decide
                pass
        return super().is_usable()
