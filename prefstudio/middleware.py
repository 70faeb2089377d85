"""Middleware of our own: headers Django 5.2 does not set, and refusing oversized bodies unread; the
client's address behind our proxy for login throttling."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat

# Browser features no page of ours uses, turned off for every page (and anything framed in one).
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media", "fullscreen",
        "geolocation", "gyroscope", "magnetometer", "microphone", "midi", "payment", "picture-in-picture",
        "publickey-credentials-get", "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
    )
)  # fmt: skip
# Room for the multipart envelope and the form's other fields around the largest upload accepted.
BODY_OVERHEAD = 1024 * 1024


class SecurityHeadersMiddleware:
    """Refuses a request whose declared body (Content-Length) is larger than any upload accepted,
    before the body is read (413); sets Permissions-Policy on every response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.PREFSTUDIO_MAX_UPLOAD_BYTES + BODY_OVERHEAD
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            response = HttpResponse(
                f"The request is {filesizeformat(length)}; uploads are limited to "
                f"{filesizeformat(settings.PREFSTUDIO_MAX_UPLOAD_BYTES)}.",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        else:
            response = self.get_response(request)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response


def forwarded_client_address(request: HttpRequest) -> str | None:
    """The client's address as the TLS proxy in front saw it: the last entry of X-Forwarded-For (the
    one the proxy appended; earlier ones come from the client and may be forged)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    return forwarded.rsplit(",", 1)[-1].strip() or request.META.get("REMOTE_ADDR")
