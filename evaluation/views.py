"""The Evaluations pages: rounds and their results, a project's model leaderboard, runs compared."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from evaluation import judge_jobs, services
from evaluation.calibration import judge_calibration
from evaluation.forms import JudgeForm, RoundForm
from evaluation.models import EvaluationRound, Judge
from generation import registry
from labeling.access import projects_for
from labeling.models import Membership
from prefstudio import charts
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import EXPORT, TRAIN, requires
from training.models import TrainingRun

_LEADS = (Membership.Role.LEAD,)


def _rounds(request: HttpRequest) -> Any:
    projects = projects_for(request.user, roles=_LEADS, include_archived=True)
    return EvaluationRound.objects.filter(project__in=projects).select_related(
        "project", "run__snapshot__project", "generation_job"
    )


@requires(EXPORT)
@require_GET
def round_index(request: HttpRequest) -> HttpResponse:
    rounds = list(_rounds(request)[:100])
    rows = [{"round": r, "results": services.round_results(r)} for r in rounds]
    projects = sorted({r.project for r in rounds}, key=lambda p: p.name)
    context = {"rows": rows, "comparison": services.runs_comparison(rounds), "projects": projects}
    return render(request, "evaluation/round_index.html", context)


@requires(TRAIN)
@require_http_methods(["GET", "POST"])
def round_create(request: HttpRequest) -> HttpResponse:
    run = None
    if run_id := request.GET.get("run") or request.POST.get("run"):
        run = get_object_or_404(
            TrainingRun, pk=int(run_id) if str(run_id).isdigit() else -1, state="succeeded"
        )
    projects = projects_for(request.user, roles=_LEADS)
    form = RoundForm(request.POST or None, request.FILES or None, run=run, projects=projects,
                     models=registry.choices())  # fmt: skip
    held_out = services.held_out_prompts(run) if run is not None else None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        note = f"{len(data['prompts'])} prompts of {data['prompt_file'].name}" if data.get("prompts") else ""
        try:
            round_ = services.round_create(
                user=request.user, run=run, model_refs=data.get("models"), project=data.get("project"),
                source=data.get("source_project"), prompts=data.get("prompts"), prompts_note=note,
                max_new_tokens=data["max_new_tokens"], seed=data["seed"],
            )  # fmt: skip
        except (ValueError, QueueUnavailable) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "The models are answering; the pairs appear in the evaluation project.")
            return redirect(round_)
    context = {"form": form, "run": run, "held_out": held_out}
    return render(request, "evaluation/round_form.html", context, status=400 if form.errors else 200)


@requires(EXPORT)
@require_GET
def round_detail(request: HttpRequest, round_id: int) -> HttpResponse:
    round_ = get_object_or_404(_rounds(request), pk=round_id)
    context = {"round": round_, "results": services.round_results(round_), "job": round_.generation_job}
    return render(request, "evaluation/round_detail.html", context)


@requires(EXPORT)
@require_GET
def leaderboard(request: HttpRequest, slug: str) -> HttpResponse:
    projects = projects_for(request.user, roles=_LEADS, include_archived=True)
    project = get_object_or_404(projects, slug=slug)
    style = request.GET.get("style") == "1"
    board = services.project_leaderboard(project, style=style)
    context = {"project": project, "board": board, "style": style, "win_rows": _win_rows(board)}
    return render(request, "evaluation/leaderboard.html", context)


def _win_rows(board: dict | None) -> list[dict[str, Any]]:
    if not board:
        return []
    matrix = board["win_rate"]
    return [
        {"model": model, "cells": list(zip(matrix["rate"][i], matrix["battles"][i], strict=True))}
        for i, model in enumerate(matrix["models"])
    ]


# --- AI judges ----------------------------------------------------------------------------------------


def _judges(request: HttpRequest) -> Any:
    projects = projects_for(request.user, roles=_LEADS, include_archived=True)
    return Judge.objects.filter(project__in=projects).select_related("project")


@requires(EXPORT)
@require_GET
def judge_index(request: HttpRequest) -> HttpResponse:
    judge_jobs.judges_reap()
    return render(request, "evaluation/judge_index.html", {"judges": _judges(request)[:100]})


@requires(EXPORT)
@require_http_methods(["GET", "POST"])
def judge_create(request: HttpRequest) -> HttpResponse:
    projects = projects_for(request.user, roles=_LEADS)
    initial = {}
    if slug := request.GET.get("project"):
        initial["project"] = projects.filter(slug=slug).first()
    models = registry.choices_for(request.user)
    form = JudgeForm(request.POST or None, initial=initial, projects=projects, models=models)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            judge = judge_jobs.judge_create(
                project=data["project"], user=request.user, model_ref=data["model"], name=data["name"],
                template=data["template"], scope=data["scope"],
            )  # fmt: skip
        except (ValueError, QueueUnavailable) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "The judge is queued; its verdicts and calibration appear here.")
            return redirect(judge)
    return render(request, "evaluation/judge_form.html", {"form": form}, status=400 if form.errors else 200)


@requires(EXPORT)
@require_GET
def judge_detail(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = get_object_or_404(_judges(request), pk=judge_id)
    if not judge.finished:
        judge_jobs.judges_reap()
        judge.refresh_from_db()
    context: dict[str, Any] = {"judge": judge}
    if request.htmx:
        response = render(request, "evaluation/judge_detail.html#judge-status", context)
        return HttpResponseStopPolling(response.content) if judge.finished else response
    context["section"] = calibration_section(judge)
    context["unreadable"] = judge.verdicts.filter(label="").select_related("pair")[:20]
    return render(request, "evaluation/judge_detail.html", context)


@requires(EXPORT)
@require_POST
def judge_cancel(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = judge_jobs.judge_cancel(get_object_or_404(_judges(request), pk=judge_id))
    messages.info(request, "Canceled." if judge.state == "canceled" else "Stopping after the current pairs…")
    return redirect(judge)


@requires(EXPORT)
@require_POST
def judge_resume(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = get_object_or_404(_judges(request), pk=judge_id)
    try:
        judge_jobs.judge_resume(judge)
    except (ValueError, QueueUnavailable) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Queued again: it judges only the pairs not judged yet.")
    return redirect(judge)


def calibration_section(
    judge: Judge,
    *,
    people: dict[int, str] | None = None,
    annotators: list[dict[str, Any]] | None = None,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the calibration partial (evaluation/_judge_calibration.html) shows of one judge: its numbers
    (evaluation.calibration, computed unless given) and its reliability diagram."""
    if numbers is None:
        if annotators is None:
            from labeling.review import review_report

            annotators = review_report(judge.project)["annotators"]
        numbers = judge_calibration(judge, people=people, annotators=annotators)
    bins = numbers["calibration"]["bins"]
    diagram = charts.line_chart(
        [("perfect calibration", [(0.0, 0.0), (1.0, 1.0)]),
         ("judge", [(b["predicted"], b["observed"]) for b in bins])],
        y_range=(0.0, 1.0), dashed=("perfect calibration",),
        x_label="judge's probability that A is better (binned)",
        y_label="share of those pairs people gave to A",
        width=420, height=300,
    )  # fmt: skip
    return {"judge": judge, "c": numbers, "diagram": diagram}
