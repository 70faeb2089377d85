"""What the training queue looks like right now: waiting jobs and the workers that serve it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime

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
    state: str
    last_heartbeat: datetime | None
    job_id: str = ""
    device: str = ""


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
        devices = {k.decode(): v.decode() for k, v in queue.connection.hgetall(DEVICES_KEY).items()}
        workers = [
            WorkerInfo(
                w.name,
                w.hostname or "",
                w.get_state(),
                w.last_heartbeat,
                w.get_current_job_id() or "",
                devices.get(w.hostname or "", ""),
            )
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
