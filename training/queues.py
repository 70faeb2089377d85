"""What the training queue looks like right now: waiting jobs and the workers that serve it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

import django_rq
import redis
from django.conf import settings
from rq import Worker

# Hash of host name -> the accelerators its workers see, written by `manage.py rqworker` at start.
DEVICES_KEY = "prefstudio:worker-devices"


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    hostname: str
    state: str  # RQ's ("idle", "busy", ...), or "lost" when its heartbeat is older than TRAINING_LOST_SECONDS
    last_heartbeat: datetime | None
    job_id: str = ""
    device: str = ""
    silent_seconds: int | None = None  # since its last heartbeat


@dataclass(frozen=True)
class QueueSnapshot:
    name: str
    queued: int = 0
    running: int = 0
    failed: int = 0
    workers: list[WorkerInfo] = field(default_factory=list)
    error: str = ""


def training_queue_snapshot() -> QueueSnapshot:
    """Counts and workers of the training queue; an `error` instead when Redis does not answer.

    A worker whose last heartbeat is older than TRAINING_LOST_SECONDS is "lost", whatever state it last
    wrote: a killed worker's entry says "busy" until Redis expires it. Our `rqworker` heartbeats at least
    every 30 s, idle (its worker TTL) or busy (RQ's job monitoring interval)."""
    name = settings.PREFSTUDIO_TRAINING_QUEUE
    try:
        queue = django_rq.get_queue(name)
        devices = {k.decode(): v.decode() for k, v in queue.connection.hgetall(DEVICES_KEY).items()}
        now = datetime.now(UTC)
        workers = []
        for w in Worker.all(queue=queue):
            silent = int((now - w.last_heartbeat).total_seconds()) if w.last_heartbeat else None
            lost = silent is not None and silent > settings.TRAINING_LOST_SECONDS
            workers.append(
                WorkerInfo(
                    w.name,
                    w.hostname or "",
                    "lost" if lost else w.get_state(),
                    w.last_heartbeat,
                    w.get_current_job_id() or "",
                    devices.get(w.hostname or "", ""),
                    silent,
                )
            )
        return QueueSnapshot(
            name=name,
            queued=queue.count,
            running=queue.started_job_registry.count,
            failed=queue.failed_job_registry.count,
            workers=sorted(workers, key=lambda w: w.name),
        )
    except redis.RedisError as exc:
        return QueueSnapshot(name=name, error=f"Redis is not reachable: {exc}")


def describe_devices() -> str:
    """This host's accelerators in words ("2 × CUDA (cuda:0, cuda:1)" or "CPU, 16 cores"), without
    initialising CUDA: the worker forks work horses afterwards, and CUDA cannot survive a fork."""
    import os

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        return f"{count} × CUDA ({', '.join(f'cuda:{i}' for i in range(count))})"
    return f"CPU, {os.cpu_count()} cores"


def register_devices(connection: redis.Redis) -> None:
    """Record this host's accelerators for the Training page's worker list."""
    connection.hset(DEVICES_KEY, socket.gethostname(), describe_devices())
