"""The annotator workbench: judge the next pair, skip, and revisit recent judgments.

Every page here is sent `Cache-Control: no-store` (`never_cache`): a copy from the browser's cache,
after Back and Forward, would show a pair already judged and counts that are out of date.
static/js/workbench.js reloads pages the browser restores from its back-forward cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.messages import get_messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling.access import project_for
from labeling.assignment import claim_next_pair, skip_pair
from labeling.display import Shown, shown
from labeling.forms import POSITION_NAMES, JudgmentForm, SkipForm, verdict_controls
from labeling.judging import (
    JudgmentConflict,
    JudgmentRefused,
    PairSkipped,
    Verdict,
    judgment_change,
    open_after_skip,
    progress,
    recent_work,
    submit_and_claim_next,
    submit_judgment,
    to_position,
)
from labeling.models import Assignment, Judgment, Project, Tally
from prefstudio.roles import LABEL, requires


def _plain(request: HttpRequest) -> bool:
    """Plain-text mode (raw text instead of rendered markdown), remembered for the session."""
    if "plain" in request.GET:
        request.session["plain_text"] = request.GET["plain"] == "1"
    return request.session.get("plain_text", False)


def _verdict(form: JudgmentForm) -> Verdict:
    data = form.cleaned_data
    return Verdict(
        choice=data["choice"],
        strength=data.get("strength") or "",
        criteria=form.criteria_answers(),
        rationale=data["rationale"].strip(),
        active_seconds=data.get("active_seconds"),
    )


STALE_PAGE = "in another tab or on an earlier page"


@dataclass(frozen=True)
class Conflict:
    """A verdict sent from a stale page (another tab, Back) for a pair the annotator had judged otherwise
    or skipped: the question they are asked, and the button that applies the stale page's verdict in
    one step (posting `fields` to `change_url`) beside the one that leaves things as they are."""

    question: str
    keep: str
    change: str
    change_url: str
    fields: list[tuple[str, str]]


def _resent(form: JudgmentForm) -> list[tuple[str, str]]:
    """The verdict as posted, for the conflict's change button to post again; then back to the workbench."""
    fields = [(name, form.cleaned_data[name]) for name in form.fields if name != "active_seconds"]
    return [(name, value) for name, value in fields if value] + [("then", "workbench")]


def _judged_otherwise(project: Project, form: JudgmentForm, judgment: Judgment) -> Conflict:
    was = POSITION_NAMES[to_position(judgment.choice, judgment.a_on_left)]
    now = POSITION_NAMES[form.cleaned_data["choice"]]
    return Conflict(
        question=f"You had already judged this pair as {was} {STALE_PAGE}; keep {was} or change to {now}?",
        keep=f"Keep {was}",
        change=f"Change to {now}",
        change_url=reverse(
            "labeling:judgment-edit", kwargs={"slug": project.slug, "judgment_id": judgment.pk}
        ),
        fields=_resent(form),
    )


def _skipped_before(project: Project, form: JudgmentForm, skipped: Assignment) -> Conflict | None:
    """The offer to judge a skipped pair after all; None when it has all the judgments it needs."""
    if not open_after_skip(skipped, project):
        return None
    now = POSITION_NAMES[form.cleaned_data["choice"]]
    reason = skipped.get_skip_reason_display()
    return Conflict(
        question=f"You had skipped this pair ({reason}) {STALE_PAGE}; leave it skipped or judge it as {now}?",
        keep="Leave it skipped",
        change=f"Judge it as {now}",
        change_url=reverse(
            "labeling:skipped-judge", kwargs={"slug": project.slug, "assignment_id": skipped.pk}
        ),
        fields=_resent(form),
    )


def _render_workbench(
    request: HttpRequest,
    project: Project,
    assignment: Assignment | None,
    form: JudgmentForm | None = None,
    counted: Tally | None = None,
    conflict: Conflict | None = None,
) -> HttpResponse:
    plain = _plain(request)
    context = {
        "project": project,
        "conflict": conflict,
        "assignment": assignment,
        "shown": _shown(assignment, plain) if assignment else None,
        "controls": verdict_controls(project, form),
        "skip_reasons": Assignment.SkipReason.choices,
        "progress": progress(project, request.user, has_lease=assignment is not None, counted=counted),
        "plain": plain,
    }
    if request.htmx:  # the judge request's answer: only the working area, swapped in place
        context["area_messages"] = get_messages(request)  # the full page shows them above the area
        return render(request, "labeling/workbench.html#workbench-area", context)
    return render(request, "labeling/workbench.html", context)


def _shown(given: Assignment | Judgment, plain: bool) -> Shown:
    return shown(given.pair, a_on_left=given.a_on_left, plain=plain)


def _next(request: HttpRequest, project: Project) -> HttpResponse:
    """After a submit or skip: the next pair in place (htmx), or a redirect to it (plain form post)."""
    if request.htmx:
        return _render_workbench(request, project, claim_next_pair(project, request.user))
    return redirect("labeling:workbench", slug=project.slug)


def _own_assignment(request: HttpRequest, project: Project, assignment_id: int) -> Assignment:
    # Only the annotator's own assignment in this project: anything else is a 404, nothing stored.
    return get_object_or_404(
        Assignment.objects.select_related("pair"), pk=assignment_id, project=project, annotator=request.user
    )


@never_cache
@require_GET
@requires(LABEL)
def workbench(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug)
    return _render_workbench(request, project, claim_next_pair(project, request.user))


@never_cache
@requires(LABEL)
@require_POST
def judge(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    project = project_for(request.user, slug)
    form = JudgmentForm(request.POST, project=project)
    if not form.is_valid():
        return _render_workbench(request, project, _own_assignment(request, project, assignment_id), form)
    verdict = _verdict(form)
    try:
        if request.htmx:  # the next pair comes back in the same response, leased in the same transaction
            turn = submit_and_claim_next(
                assignment_id=assignment_id, annotator=request.user, project=project, verdict=verdict
            )
            return _render_workbench(request, project, turn.upcoming, counted=turn.counted)
        submit_judgment(assignment_id=assignment_id, annotator=request.user, project=project, verdict=verdict)
    except Assignment.DoesNotExist:
        raise Http404("No such assignment.") from None  # not theirs, or another project's: nothing stored
    except JudgmentConflict as exc:  # from a stale page: ask, with the current pair below
        conflict = _judged_otherwise(project, form, exc.judgment)
        return _render_workbench(request, project, claim_next_pair(project, request.user), conflict=conflict)
    except PairSkipped as exc:
        if conflict := _skipped_before(project, form, exc.assignment):
            return _render_workbench(
                request, project, claim_next_pair(project, request.user), conflict=conflict
            )
        messages.warning(request, "You had skipped this pair, and it has all the judgments it needs now.")
        return _next(request, project)
    except JudgmentRefused as exc:
        messages.warning(request, str(exc))
        return _next(request, project)
    return redirect("labeling:workbench", slug=project.slug)


@never_cache
@requires(LABEL)
@require_POST
def skip(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    project = project_for(request.user, slug)
    assignment = _own_assignment(request, project, assignment_id)
    form = SkipForm(request.POST)
    if form.is_valid():
        skip_pair(assignment=assignment, reason=form.cleaned_data["reason"])
    else:
        messages.warning(request, "Pick a reason to skip this pair.")
    return _next(request, project)


@never_cache
@require_GET
@requires(LABEL)
def recent(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug)
    items = recent_work(project, request.user)
    return render(request, "labeling/recent.html", {"project": project, "items": items})


def _after_change(request: HttpRequest, project: Project) -> HttpResponse:
    """Back where the change was asked for: the workbench (a conflict's button) or the recent list."""
    then = "labeling:workbench" if request.POST.get("then") == "workbench" else "labeling:recent"
    return redirect(then, slug=project.slug)


@never_cache
@requires(LABEL)
@require_http_methods(["GET", "POST"])
def judgment_edit(request: HttpRequest, slug: str, judgment_id: int) -> HttpResponse:
    project = project_for(request.user, slug)
    judgment = get_object_or_404(
        Judgment.objects.select_related("pair"), pk=judgment_id, pair__project=project, annotator=request.user
    )
    initial = {
        "choice": to_position(judgment.choice, judgment.a_on_left),
        "strength": judgment.strength,
        "rationale": judgment.rationale,
        **{
            f"criterion_{i}": to_position(judgment.criteria.get(c["name"], ""), judgment.a_on_left)
            for i, c in enumerate(project.criteria)
        },
    }
    form = JudgmentForm(request.POST or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        judgment_change(judgment=judgment, verdict=_verdict(form))
        messages.success(request, "Judgment changed.")
        return _after_change(request, project)
    context = {
        "project": project,
        "heading": "Change your judgment",
        "shown": _shown(judgment, _plain(request)),
        "controls": verdict_controls(project, form),
    }
    return render(request, "labeling/judgment_edit.html", context)


@never_cache
@requires(LABEL)
@require_http_methods(["GET", "POST"])
def skipped_judge(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    """Judge a pair the annotator skipped, after all, while it still needs judgments."""
    project = project_for(request.user, slug)
    skipped = _own_assignment(request, project, assignment_id)
    form = JudgmentForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        verdict = _verdict(form)
        try:
            submit_judgment(
                assignment_id=skipped.pk,
                annotator=request.user,
                project=project,
                verdict=verdict,
                after_skip=True,
            )
        except (
            JudgmentRefused
        ) as exc:  # a full pair, or judged otherwise meanwhile (the recent list shows it)
            messages.warning(request, str(exc))
        else:
            messages.success(request, "Judged after all.")
        return _after_change(request, project)
    if skipped.state != Assignment.State.SKIPPED or not open_after_skip(skipped, project):
        messages.info(request, "This pair is no longer open to you.")
        return redirect("labeling:recent", slug=project.slug)
    context = {
        "project": project,
        "heading": "Judge a skipped pair",
        "shown": _shown(skipped, _plain(request)),
        "controls": verdict_controls(project, form),
    }
    return render(request, "labeling/judgment_edit.html", context)
