"""RQ workers in other processes for tests: started on this test's database, queue and folders.

A worker in another process must open the test database itself, so tests that use one need a database
server (PostgreSQL, as in CI); on SQLite they are skipped (`needs_postgres`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]

needs_postgres = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").split(":")[0] not in ("postgres", "postgresql"),
    reason="a worker in another process needs a shared database server; CI runs on PostgreSQL",
)


def wait_for(predicate, *, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def database_url() -> str:
    s = connection.settings_dict
    return (
        f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    )


def start_worker(queue: str, *, burst: bool = False, **env: str) -> subprocess.Popen:
    """`manage.py rqworker QUEUE` in its own process group, on this test's database and folders."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PREFSTUDIO_TRAINING_QUEUE": queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "PREFSTUDIO_CACHE_DIR": str(settings.PREFSTUDIO_CACHE_DIR),
        "TRAINING_HEARTBEAT_SECONDS": "1",
        "DEBUG": "true",
        **env,
    }
    args = [sys.executable, "manage.py", "rqworker", queue, *(["--burst"] if burst else [])]
    log = (Path(settings.ARTIFACT_ROOT).parent / f"worker-{queue}.log").open("wb")
    return subprocess.Popen(args, cwd=ROOT, env=environment, start_new_session=True, stdout=log, stderr=log)


def worker_log(queue: str) -> str:
    return (Path(settings.ARTIFACT_ROOT).parent / f"worker-{queue}.log").read_text()[-3000:]


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
