"""API tokens: make one, revoke one, and find the user a presented token acts as.

A token reads `ps_<prefix>_<secret>`: 8 random characters that find its row, then 43 more (256 bits from
`secrets`). Only the prefix and the SHA-256 of the whole token are stored, so the table alone cannot
make a working token; `create_token` returns the plain token, the only time it exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from api.models import ApiToken

SCHEME = "ps"
PREFIX_LENGTH = 8
SECRET_LENGTH = 43  # 43 base-62 characters: 256 bits
# Letters and digits only: a double click selects the whole token, and `_` stays a separator.
ALPHABET = string.ascii_letters + string.digits
# last_used_at is written at most this often per token, not on every request.
LAST_USED_EVERY = timedelta(minutes=1)


def create_token(user: Any, *, name: str, expires_days: int | None = None) -> tuple[str, ApiToken]:
    """A new token for `user`: the plain token (shown once, never stored) and its row."""
    prefix = _random(PREFIX_LENGTH)
    raw = f"{SCHEME}_{prefix}_{_random(SECRET_LENGTH)}"
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    token = ApiToken.objects.create(
        user=user, name=name, prefix=prefix, digest=_digest(raw), expires_at=expires_at
    )
    return raw, token


def revoke(token: ApiToken) -> None:
    """The token stops working now; revoking it again keeps the first time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=token.revoked_at)


def authenticate(raw: str) -> Any | None:
    """The active user a presented token acts as; None for anything else."""
    token = valid_token(raw)
    return token.user if token is not None else None


def valid_token(raw: str, *, now: datetime | None = None) -> ApiToken | None:
    """The token row (with its user) that `raw` is, if it still works: not revoked, not expired, its user
    active. Records the use, at most once every LAST_USED_EVERY."""
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != PREFIX_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    # The prefix is no secret (owners see it in their list), so finding the row by it leaks nothing; the
    # digests are compared in constant time.
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(raw)):
        return None
    now = now or timezone.now()
    if state(token, now=now) != "active" or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def state(token: ApiToken, *, now: datetime | None = None) -> str:
    """One word for lists: active, revoked or expired."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= (now or timezone.now()):
        return "expired"
    return "active"


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
