"""django-rq's `rqworker`, defaulting to the JSON serializer our queues use and to a heartbeat every 30 s,
and saying which accelerators this host has (the Training page lists them beside each worker).

With django-rq's own default (pickle) a plain `manage.py rqworker gpu` on a GPU host could not
read the jobs the web app enqueues.
"""

from __future__ import annotations

from typing import Any

import django_rq
import redis
from django.conf import settings
from django_rq.management.commands.rqworker import Command as RQWorkerCommand

from training.queues import register_devices
from training.services import runs_reap

WORKER_TTL = 45


class Command(RQWorkerCommand):
    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        # An idle RQ worker heartbeats every worker_ttl - 15 s (405 s by RQ's default); at this TTL it does
        # every 30 s, as a busy one does, so the Training page can tell a lost worker within a minute.
        parser.set_defaults(serializer=settings.RQ_JOB_SERIALIZER, worker_ttl=WORKER_TTL)

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PREFSTUDIO_TRAINING_QUEUE in args:
            try:
                register_devices(django_rq.get_connection(settings.PREFSTUDIO_TRAINING_QUEUE))
            except redis.RedisError as exc:
                self.stderr.write(f"Could not record this host's devices: {exc}")
            # A worker restarting after a crash settles the runs it (or another lost worker) left behind.
            runs_reap()
        super().handle(*args, **options)
