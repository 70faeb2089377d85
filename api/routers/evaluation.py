"""Blind evaluation rounds and their results (leads and admins, as the Evaluations pages). Rounds are
those judged in projects the user leads (admins: all); any other round is 404."""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router
from ninja.pagination import paginate

from api.errors import responses
from api.routers import LEADS, Pages, require
from api.schemas import RoundDetailOut, RoundOut
from evaluation.models import EvaluationRound
from labeling.access import projects_for
from prefstudio.roles import EXPORT

router = Router(tags=["evaluation"])


def _rounds(request: HttpRequest):
    projects = projects_for(request.user, roles=LEADS, include_archived=True)
    return EvaluationRound.objects.filter(project__in=projects).select_related("project", "source_project")


@router.get("/evaluation/rounds", response=responses({200: list[RoundOut]}, 403))
@paginate(Pages)
def round_list(request: HttpRequest):
    """Rounds, newest first (their results at each round's GET)."""
    require(request, EXPORT)
    return _rounds(request).order_by("-created_at", "-pk")


@router.get("/evaluation/rounds/{round_id}", response=responses({200: RoundDetailOut}, 403, 404))
def round_get(request: HttpRequest, round_id: int):
    """A round with what people said of it: the tuned model's win rate over its base with its interval,
    per criterion too, the counts, and the annotators' agreement."""
    require(request, EXPORT)
    return get_object_or_404(_rounds(request), pk=round_id)
