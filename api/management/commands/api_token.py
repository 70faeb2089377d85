"""Make an API token for a user and print it (only the token, so a script can capture it)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from api.tokens import create_token


class Command(BaseCommand):
    help = "Make an API token for USERNAME and print it: the only time it is shown."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What will use it (default: %(default)s).")
        parser.add_argument("--expires-days", type=int, help="Days it works (default: until revoked).")

    def handle(self, *args: Any, username: str, name: str, expires_days: int | None, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"{username} is inactive: a token of theirs would not work.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        raw, _ = create_token(user, name=name, expires_days=expires_days)
        self.stdout.write(raw)
