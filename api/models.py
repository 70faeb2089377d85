from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A personal token for the JSON API: it acts as its user, with exactly the user's permissions.

    The plain token (`ps_<prefix>_<secret>`) exists once, when api.tokens.create_token returns it; the
    table keeps its prefix, to find the row, and a digest, to check it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, for its owner's list.")
    prefix = models.CharField(max_length=16, unique=True, help_text="The token's first characters.")
    # SHA-256 of the whole token, hex. A fast hash is right here, unlike for passwords: the token carries
    # more than 256 random bits from `secrets`, so no dictionary or brute force reaches it, and a slow
    # hash (PBKDF2) would only cost CPU on every API request.
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    # Written at most once a minute per token (api.tokens), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (ps_{self.prefix}_…)"
