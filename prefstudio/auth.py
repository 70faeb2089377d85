"""Loading the session and the signed-in user: one statement in front of every request.

Django's database session store and ModelBackend load them with two ORM queries. Here the session row
carries the signed-in user's id (prefstudio.models.Session), and the session store loads the session,
that user and their group names with one written-out statement. Django's own `get_user` still decides
whether the user is signed in (backend, session hash, active flag); it only finds the user already
loaded. Everything else (saving sessions, logging in and out, permissions) is Django's own.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from typing import Any

from django.contrib import auth
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.auth.models import Group
from django.contrib.sessions.backends import db
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from prefstudio import sql
from prefstudio.models import Session
from prefstudio.roles import remember_groups

# The user the session store loaded, offered to UserBackend.get_user while Django's get_user runs.
_session_user: ContextVar[Any] = ContextVar("prefstudio_session_user", default=None)


@cache
def _queries() -> tuple[str, str, tuple[str, ...]]:
    """(session with its user, user alone, the user's fields): SELECTs of a user's columns and group
    names, one row per group."""
    model = get_user_model()
    meta, through = model._meta, model.groups.through._meta
    fields = tuple(f.attname for f in meta.concrete_fields)
    user = f"{sql.columns(model, fields, 'u')}, g.name"
    groups = (
        f"LEFT JOIN {through.db_table} ug ON ug.user_id = u.{meta.pk.column} "
        f"LEFT JOIN {Group._meta.db_table} g ON g.id = ug.group_id"
    )
    session = (
        f"SELECT s.session_data, {user} FROM {Session._meta.db_table} s "
        f"LEFT JOIN {meta.db_table} u ON u.{meta.pk.column} = s.user_id {groups} "
        "WHERE s.session_key = %s AND s.expire_date > %s"
    )
    alone = f"SELECT {user} FROM {meta.db_table} u {groups} WHERE u.{meta.pk.column} = %s"
    return session, alone, fields


def _load_user(rows: list[tuple], fields: tuple[str, ...]) -> Any:
    """The user in `rows` (as _queries select them, leading columns cut off) with their groups."""
    if not rows or rows[0][0] is None:
        return None
    user = sql.load(get_user_model(), fields, rows[0][:-1])
    remember_groups(user, [row[-1] for row in rows if row[-1] is not None])
    return user


def _user_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class SessionStore(db.SessionStore):
    """Django's database session store on prefstudio.models.Session: the row records the signed-in
    user, and loading the session loads that user too (`loaded_user`)."""

    loaded_user: Any = None

    @classmethod
    def get_model_class(cls) -> type[Session]:
        return Session

    def create_model_instance(self, data: dict[str, Any]) -> Session:
        instance = super().create_model_instance(data)
        instance.user_id = _user_id(data.get(SESSION_KEY))
        return instance

    def load(self) -> dict[str, Any]:
        self.loaded_user = None
        if not self.session_key:
            return {}
        query, _, fields = _queries()
        rows = sql.fetchall(query, [self.session_key, sql.param(Session, "expire_date", timezone.now())])
        if not rows:
            self._session_key = None
            return {}
        data = self.decode(rows[0][0])
        user = _load_user([row[1:] for row in rows], fields)
        if user is not None and user.pk == _user_id(data.get(SESSION_KEY)):
            self.loaded_user = user
        return data


class UserBackend(ModelBackend):
    """ModelBackend, loading the user and their group names with one written-out statement, or taking
    the user the session store already loaded."""

    def get_user(self, user_id: Any) -> Any:
        model = get_user_model()
        pk = model._meta.pk.to_python(user_id)
        user = _session_user.get()
        if user is None or user.pk != pk:
            _, query, fields = _queries()
            user = _load_user(sql.fetchall(query, [sql.param(model, model._meta.pk.name, pk)]), fields)
        return user if user is not None and self.user_can_authenticate(user) else None


def get_user(request: HttpRequest) -> Any:
    """django.contrib.auth.get_user, with the user the session store loaded on offer to UserBackend."""
    if not hasattr(request, "_cached_user"):
        request.session.get(SESSION_KEY)  # loads the session (and its user) if not yet loaded
        token = _session_user.set(getattr(request.session, "loaded_user", None))
        try:
            request._cached_user = auth.get_user(request)
        finally:
            _session_user.reset(token)
    return request._cached_user


class AuthenticationMiddleware(DjangoAuthenticationMiddleware):
    """Django's middleware; `request.user` comes from `get_user` above."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: get_user(request))
