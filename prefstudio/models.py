"""The app's own session table: Django's session row plus the signed-in user, so that one statement
loads a request's session and its user (prefstudio.auth)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class Session(AbstractBaseSession):
    """A session; `user` is the signed-in user the session data names (null when signed out)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta(AbstractBaseSession.Meta):
        db_table = "prefstudio_session"

    @classmethod
    def get_session_store_class(cls) -> Any:
        from prefstudio.auth import SessionStore

        return SessionStore
