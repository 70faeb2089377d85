"""django-rq's `rqworker`, defaulting to the JSON serializer our queues use.

With django-rq's own default (pickle) a plain `manage.py rqworker gpu` on a GPU host could not
read the jobs the web app enqueues.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django_rq.management.commands.rqworker import Command as RQWorkerCommand


class Command(RQWorkerCommand):
    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.set_defaults(serializer=settings.RQ_JOB_SERIALIZER)
