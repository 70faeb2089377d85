"""Every error the JSON API answers has one shape, `api.schemas.ErrorOut`:

    {"detail": "what went wrong, in words",
     "errors": [{"loc": ["body", "line", 12, "response_a"], "msg": "..."}]}

`install` registers the handlers that turn exceptions into it: request validation (422), the services'
ValueError (400, located at the field its message names), a request Django finds suspicious (400, logged
as Django logs it), a missing or foreign object (404), a missing permission (403), a missing or dead token
(401), throttling (429; django-ninja adds Retry-After), a queue that does not answer (503) and a full disk
(507). `responses` declares them on an operation, so the OpenAPI document lists what each can answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import pydantic
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from api.schemas import ErrorOut
from labeling.batches import OutOfSpace
from prefstudio.jobs import QueueUnavailable

# Statuses any operation may answer: a malformed request (a NUL in a parameter), no or a dead token, invalid
# parameters, too many calls.
ALWAYS = (400, 401, 422, 429)
# A service's ValueError that starts with "name: " is about that field (generation, training, exports).
_FIELD = re.compile(r"^([a-z][a-z_]*): (.+)$", re.DOTALL)


class ApiError(HttpError):
    """An error with its status, words and, where known, located problems."""

    def __init__(self, status: int, detail: str, errors: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(status, detail)
        self.errors = list(errors)


def responses(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """An operation's `response=`: its successes, and ErrorOut for ALWAYS and `codes`."""
    return {**ok, **dict.fromkeys(sorted({*ALWAYS, *codes}), ErrorOut)}


def error_body(detail: str, errors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"detail": detail, "errors": [{"loc": list(e["loc"]), "msg": str(e["msg"])} for e in errors]}


def _located(loc: Sequence[str | int]) -> list[str | int]:
    """django-ninja's location of a problem without the view's parameter name: ["body", "eval_fraction"],
    not ["body", "payload", "eval_fraction"] (every body parameter of ours is `payload`)."""
    loc = list(loc)
    return [loc[0], *loc[2:]] if loc[:2] == ["body", "payload"] else loc


def install(api: NinjaAPI) -> None:
    def answer(request: HttpRequest, status: int, detail: str, errors: Sequence[dict] = ()) -> HttpResponse:
        return api.create_response(request, error_body(detail, errors), status=status)

    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = [{"loc": _located(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors]
        shown = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
        return answer(request, 422, f"Invalid request: {shown}" if shown else "Invalid request.", errors)

    def value_error(request: HttpRequest, exc: ValueError) -> HttpResponse:
        message = str(exc)
        match = _FIELD.match(message)
        loc = ["body", match.group(1)] if match else ["body"]
        return answer(request, 400, message, [{"loc": loc, "msg": match.group(2) if match else message}])

    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return answer(request, 404, str(exc) or "Not found.")

    def suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
        # Logged as Django logs what it answers 400 for itself (django.core.handlers.exception).
        logging.getLogger(f"django.security.{exc.__class__.__name__}").error(str(exc))
        return answer(request, 400, f"Refused: {exc}")

    def forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        return answer(request, 403, str(exc) or "Your account may not do this.")

    def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = answer(request, 401, "A valid API token is required: Authorization: Bearer ps_...")
        response["WWW-Authenticate"] = "Bearer"
        return response

    def throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
        return answer(request, 429, "Too many requests for this token; retry after Retry-After seconds.")

    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return answer(request, exc.status_code, str(exc), getattr(exc, "errors", ()))

    def queue_unavailable(request: HttpRequest, exc: QueueUnavailable) -> HttpResponse:
        return answer(request, 503, str(exc))

    def out_of_space(request: HttpRequest, exc: OutOfSpace) -> HttpResponse:
        return answer(request, 507, str(exc))

    def server_error(request: HttpRequest, exc: pydantic.ValidationError) -> HttpResponse:
        # A pydantic error here is a response that does not fit its schema: our bug, a 500, not a
        # client's ValueError.
        raise exc

    handlers: list[tuple[type[Exception], Any]] = [
        (ValidationError, invalid),
        (ValueError, value_error),
        (pydantic.ValidationError, server_error),
        (Http404, not_found),
        (SuspiciousOperation, suspicious),
        (PermissionDenied, forbidden),
        (AuthenticationError, unauthorized),
        (Throttled, throttled),
        (HttpError, http_error),
        (QueueUnavailable, queue_unavailable),
        (OutOfSpace, out_of_space),
    ]
    for exc_class, handler in handlers:
        api.add_exception_handler(exc_class, handler)
