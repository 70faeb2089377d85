"""Loading the session and the signed-in user, the two queries in front of every request.

Django's database session store and ModelBackend do exactly this through the ORM; building those two
queries was a tenth of an annotator's judge request, so here they are written out. Everything else
(saving sessions, logging in and out, permissions) is Django's own.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.contrib.sessions.backends import db
from django.utils import timezone

from prefstudio import sql
from prefstudio.roles import remember_groups


class SessionStore(db.SessionStore):
    """Django's database session store, loading with one written-out statement."""

    def load(self) -> dict[str, Any]:
        session_key = self.session_key
        if not session_key:
            return {}
        table = self.model._meta.db_table
        row = sql.fetchone(
            f"SELECT session_data FROM {table} WHERE session_key = %s AND expire_date > %s",
            [session_key, sql.param(self.model, "expire_date", timezone.now())],
        )
        if row is None:
            self._session_key = None
            return {}
        return self.decode(row[0])


class UserBackend(ModelBackend):
    """ModelBackend, loading the signed-in user and their group names with one written-out statement."""

    def get_user(self, user_id: Any) -> Any:
        model = get_user_model()
        meta, through = model._meta, model.groups.through._meta
        fields = tuple(f.attname for f in meta.concrete_fields)
        pk = sql.param(model, meta.pk.name, meta.pk.to_python(user_id))
        rows = sql.fetchall(
            f"SELECT {sql.columns(model, fields, 'u')}, g.name FROM {meta.db_table} u "
            f"LEFT JOIN {through.db_table} ug ON ug.user_id = u.{meta.pk.column} "
            f"LEFT JOIN {Group._meta.db_table} g ON g.id = ug.group_id WHERE u.{meta.pk.column} = %s",
            [pk],
        )
        if not rows:
            return None
        user = sql.load(model, fields, rows[0][:-1])
        remember_groups(user, [row[-1] for row in rows if row[-1] is not None])
        return user if self.user_can_authenticate(user) else None
