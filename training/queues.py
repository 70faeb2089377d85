"""What the training queue looks like right now: waiting jobs and the workers that serve it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import django_rq
import redis
from django.conf import settings
from rq import Worker


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    hostname: str
    state: str
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class QueueSnapshot:
    name: str
    queued: int = 0
    running: int = 0
    failed: int = 0
    workers: list[WorkerInfo] = field(default_factory=list)
    error: str = ""


def training_queue_snapshot() -> QueueSnapshot:
    """Counts and workers of the training queue; an `error` instead when Redis does not answer."""
    name = settings.PREFSTUDIO_TRAINING_QUEUE
    try:
        queue = django_rq.get_queue(name)
        workers = [
            WorkerInfo(w.name, w.hostname or "", w.get_state(), w.last_heartbeat)
            for w in Worker.all(queue=queue)
        ]
        return QueueSnapshot(
            name=name,
            queued=queue.count,
            running=queue.started_job_registry.count,
            failed=queue.failed_job_registry.count,
            workers=sorted(workers, key=lambda w: w.name),
        )
    except redis.RedisError as exc:
        return QueueSnapshot(name=name, error=f"Redis is not reachable: {exc}")
