"""Training pages (admins)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from prefstudio.roles import TRAIN, requires
from training.queues import training_queue_snapshot


@require_GET
@requires(TRAIN)
def run_index(request: HttpRequest) -> HttpResponse:
    return render(request, "training/run_index.html", {"queue": training_queue_snapshot()})
