"""The cache every process shares (Redis, the `shared` alias), for what each request would otherwise read
from the database: a user's roles (prefstudio.roles) and who may open which project (labeling.access).

An entry is dropped when a change to the rows it was read from is saved (signal receivers call
`forget`), so the next request reads them again. A request that read the rows just before such a change
committed may store the old values after it: SECONDS bounds how long that can last, as it bounds changes
made around the signals (bulk updates, SQL by hand).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.core.cache import caches
from django.db import transaction
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

ALIAS = "shared"
SECONDS = 60


def forget(keys: Iterable[str]) -> None:
    """Drop `keys` now and once more when the transaction commits (at once outside one).

    A Redis that does not answer serves nothing either: the change is saved, with a warning, and an
    entry it kept expires within SECONDS once it answers again.
    """
    keys = list(keys)
    if keys:
        _delete(keys)
        transaction.on_commit(lambda: _delete(keys))


def _delete(keys: list[str]) -> None:
    try:
        caches[ALIAS].delete_many(keys)
    except (ConnectionInterrupted, RedisError) as exc:
        log.warning(
            "shared cache: could not drop %d keys (%s); they expire within %d s", len(keys), exc, SECONDS
        )


class RedisDownFilter(logging.Filter):
    """For the errors django-redis ignores (IGNORE_EXCEPTIONS) and logs with a traceback on every cache
    call: one line, at most once every SECONDS per process, naming the error."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        now = time.monotonic()
        if self.last and now - self.last < SECONDS:
            return False
        self.last = now
        error = record.exc_info[1]
        cause = error.__cause__ or error.__context__ or error
        record.msg = "shared cache: Redis does not answer (%s); reading from the database until it does"
        record.args = (cause,)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
