"""Per-token request limits for the JSON API: `settings.PREFSTUDIO_API_RATE` requests (default 600 a
minute) per token, counted in the shared cache so every web process counts together.

Requests are counted in fixed windows (one Redis key per token and window, incremented atomically):
one round trip per request, and a burst of up to twice the rate can straddle a window's end. Past the
limit django-ninja answers 429 with `Retry-After`, the seconds until the window ends.

The shared cache ignores a Redis that does not answer (prefstudio.shared_cache): the API then keeps
serving, unthrottled, until Redis is back.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from prefstudio import shared_cache

DEFAULT_RATE = "600/min"
_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, int]:
    """'600/min' -> (600, 60): requests allowed, and the window in seconds ('100/5min' works too)."""
    count, _, period = rate.partition("/")
    unit = period.lstrip("0123456789")
    if unit not in _PERIODS or not count.isdigit():
        raise ValueError(f"Invalid API rate {rate!r}: write it as N/s, N/min, N/hour or N/day")
    return int(count), int(period[: len(period) - len(unit)] or 1) * _PERIODS[unit]


class TokenRateThrottle(BaseThrottle):
    """At most `rate` requests per window for each token (`request.api_token`, set by api.auth.TokenAuth);
    requests without one are not counted here. `rate` None reads the setting on every request."""

    def __init__(self, rate: str | None = None) -> None:
        self.rate = rate
        # django-ninja shares one throttle between the requests of all threads and asks wait() after
        # allow_request(): the answer is kept per thread.
        self._last = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        token = getattr(request, "api_token", None)
        if token is None:
            return True
        limit, period = parse_rate(self.rate or getattr(settings, "PREFSTUDIO_API_RATE", DEFAULT_RATE))
        now = time.time()
        window = int(now // period)
        key = f"api-rate:{token.prefix}:{window}"
        cache = caches[shared_cache.ALIAS]
        try:
            count = cache.incr(key)
        except ValueError:  # the window's first request
            cache.add(key, 1, timeout=period)
            count = 1
        self._last.wait = (window + 1) * period - now
        return count is None or count <= limit  # None: Redis did not answer

    def wait(self) -> float | None:
        return getattr(self._last, "wait", None)


THROTTLES = [TokenRateThrottle()]
