"""The JSON API, version 1, mounted at /api/v1/: OpenAPI at openapi.json, interactive docs at docs.

Every operation needs a token (api.auth.TokenAuth) and does what the token's user may do in the pages,
with the same permission checks and services; errors have one shape (api.errors).
"""

from __future__ import annotations

from ninja import NinjaAPI
from ninja.operation import Operation

from api import errors
from api.auth import TokenAuth
from api.docs import DOCS
from api.routers import evaluation, exports, generation, imports, projects, training
from api.throttle import THROTTLES


class _Api(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        """The view's name ("run_create"), unique across the routers: what generated clients call."""
        return operation.view_func.__name__


api = _Api(
    title="prefstudio",
    version="1",
    description="Projects, imports, agreement, exports, training runs, generation jobs and evaluation "
    "rounds. Authenticate with `Authorization: Bearer <token>`; a token acts as its user.",
    auth=TokenAuth(),
    throttle=THROTTLES,
    docs=DOCS,
    docs_url="/docs",
    urls_namespace="api-v1",  # "api" is the account pages' (api/urls_account.py)
)
errors.install(api)
for area in (projects, imports, exports, training, generation, evaluation):
    api.add_router("", area.router)
