"""django-rq's `rqworker`, defaulting to the JSON serializer our queues use, and saying which
accelerators this host has (the Training page lists them beside each worker).

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


class Command(RQWorkerCommand):
    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.set_defaults(serializer=settings.RQ_JOB_SERIALIZER)

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PREFSTUDIO_TRAINING_QUEUE in args:
            try:
                register_devices(django_rq.get_connection(settings.PREFSTUDIO_TRAINING_QUEUE))
            except redis.RedisError as exc:
                self.stderr.write(f"Could not record this host's devices: {exc}")
            # A worker restarting after a crash settles the runs it (or another lost worker) left behind.
            runs_reap()
        super().handle(*args, **options)
