"""Make sure Redis answers at REDIS_URL, starting a local redis-server when one is installed."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from prefstudio.health import redis_status

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Command(BaseCommand):
    help = "Check Redis at REDIS_URL; start a local redis-server (no persistence) if none listens."

    def handle(self, *args: Any, **options: Any) -> None:
        url = settings.REDIS_URL
        if redis_status(url) == "ok":
            self.stdout.write(f"Redis answers at {url}.")
            return
        parsed = urlparse(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        server = shutil.which("redis-server")
        if host not in _LOCAL_HOSTS or server is None:
            raise CommandError(
                f"Redis does not answer at {url}. Start one (Debian/Ubuntu: `sudo apt-get install "
                "redis-server`; macOS: `brew install redis && brew services start redis`; or "
                "`docker run -p 6379:6379 redis:7`), or point REDIS_URL at a running Redis."
            )
        subprocess.run(
            [server, "--daemonize", "yes", "--bind", host, "--port", str(port), "--save", "",
             "--appendonly", "no"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(50):
            if redis_status(url) == "ok":
                self.stdout.write(f"Started redis-server on {host}:{port} (no persistence).")
                return
            time.sleep(0.1)
        raise CommandError(f"Started redis-server but it does not answer at {url}; check its log.")
