"""Loading the session and the signed-in user, the two queries in front of every request.

Django's database session store and ModelBackend do exactly this through the ORM; building those two
queries was a tenth of an annotator's judge request, so here they are written out. Everything else
(saving sessions, logging in and out, permissions) is Django's own.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends import db
from django.db import connection
from django.utils import timezone

from prefstudio import sql


class SessionStore(db.SessionStore):
    """Django's database session store, loading with one written-out statement."""

    def load(self) -> dict[str, Any]:
        session_key = self.session_key
        if not session_key:
            return {}
        table, field = self.model._meta.db_table, self.model._meta.get_field("expire_date")
        row = sql.fetchone(
            f"SELECT session_data FROM {table} WHERE session_key = %s AND expire_date > %s",
            [session_key, field.get_db_prep_value(timezone.now(), connection)],
        )
        if row is None:
            self._session_key = None
            return {}
        return self.decode(row[0])


class UserBackend(ModelBackend):
    """ModelBackend, loading the signed-in user with one written-out statement."""

    def get_user(self, user_id: Any) -> Any:
        model = get_user_model()
        fields = tuple(f.attname for f in model._meta.concrete_fields)
        pk = sql.param(model, model._meta.pk.name, model._meta.pk.to_python(user_id))
        table, key = model._meta.db_table, model._meta.pk.column
        row = sql.fetchone(f"SELECT {sql.columns(model, fields)} FROM {table} WHERE {key} = %s", [pk])
        if row is None:
            return None
        user = sql.load(model, fields, row)
        return user if self.user_can_authenticate(user) else None
