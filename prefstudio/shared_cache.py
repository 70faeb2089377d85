"""The cache every process shares (Redis, the `shared` alias), for what each request would otherwise read
from the database: a user's roles (prefstudio.roles) and who may open which project (labeling.access).

An entry is dropped when a change to the rows it was read from is saved (signal receivers call
`forget`), so the next request reads them again. A request that read the rows just before such a change
committed may store the old values after it: SECONDS bounds how long that can last, as it bounds changes
made around the signals (bulk updates, SQL by hand).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.cache import caches
from django.db import transaction

ALIAS = "shared"
SECONDS = 60


def forget(keys: Iterable[str]) -> None:
    """Drop `keys` now and once more when the transaction commits (at once outside one)."""
    keys = list(keys)
    if keys:
        caches[ALIAS].delete_many(keys)
        transaction.on_commit(lambda: caches[ALIAS].delete_many(keys))
