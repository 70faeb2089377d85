"""Bearer-token authentication for the JSON API (django-ninja).

Interface for the endpoints: the API is built as

    NinjaAPI(auth=TokenAuth(), throttle=api.throttle.THROTTLES, docs=api.docs.DOCS, docs_url="/docs")

and every operation then sees, once `Authorization: Bearer ps_…` names a working token:

- `request.user`: the token's user, so a view checks permissions with the functions the pages use
  (`prefstudio.roles.user_can`, `labeling.access.projects_for` / `project_for`): a token does exactly
  what its user may do in the UI, nothing more;
- `request.auth`: the same user (django-ninja's name for what the auth returned);
- `request.api_token`: the `api.models.ApiToken` row (its prefix keys the throttle).

A missing, unknown, revoked or expired token, or one of an inactive user, gets 401. The session cookie
never authenticates an API call, so the API needs no CSRF token.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from api.tokens import valid_token


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        api_token = valid_token(token)
        if api_token is None:
            return None
        request.user = api_token.user
        request.api_token = api_token  # type: ignore[attr-defined]
        return api_token.user
