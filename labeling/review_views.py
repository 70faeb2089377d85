"""Review pages for leads (and admins): the agreement dashboard, the disagreement queue, adjudication,
sending pairs back, leaving annotators out of consensus and re-queueing the pairs that leaves under k.
Every view checks the review permission, then that the user leads the project (404 otherwise)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.core.cache import caches
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling import review
from labeling.access import project_for
from labeling.display import shown
from labeling.forms import AdjudicationForm
from labeling.models import Adjudication, Membership, Pair, Project
from prefstudio import charts, shared_cache
from prefstudio.roles import REVIEW, requires

_LEADS = (Membership.Role.LEAD,)
ANNOTATOR_COLUMNS = [
    ("annotator", "Annotator"),
    ("judgments", "Judgments"),
    ("time", "Median wall s"),
    ("agreement", "Agreement"),
    ("gold", "Gold accuracy"),
    ("left", "Left rate"),
    ("longer", "Longer rate"),
    ("tie", "Ties"),
    ("both_bad", "Both bad"),
    ("ds", "DS accuracy"),
]
SORTABLE = {
    "annotator": "name",
    "judgments": "judgments",
    "time": "median_seconds",
    "agreement": "agreement",
    "gold": "gold_accuracy",
    "left": "left_rate",
    "longer": "longer_rate",
    "tie": "tie_rate",
    "both_bad": "both_bad_rate",
    "ds": "ds_accuracy",
}


# The kappa heatmap keeps its cells readable: 34 px, narrower only to fit the page (72rem less padding)
# with up to 30 annotators, and never below 26 px (wider matrices scroll instead of shrinking).
HEATMAP_CELL, HEATMAP_MIN_CELL, HEATMAP_FIT_WIDTH, HEATMAP_MARGIN = 34, 26, 1100, 110
HEATMAP_HALF_WIDTH = 520  # wider than this, the heatmap takes the whole row instead of half of it
NO_VARIATION_MARK = "n/v"
JUDGE_SECTIONS_TTL = 3600  # seconds; the key changes with the report and the judges anyway
HEATMAP_TITLE = "Pairwise Cohen's kappa between annotators"


def _lead_project(request: HttpRequest, slug: str) -> Project:
    return project_for(request.user, slug, roles=_LEADS, include_archived=True)


def _sorted_annotators(rows: list[dict[str, Any]], sort: str) -> tuple[list[dict[str, Any]], str]:
    """The annotator rows ordered by a column (`-name` for descending); unknown columns keep the order."""
    key = sort.lstrip("-")
    if key not in SORTABLE:
        return rows, ""
    field = SORTABLE[key]

    def value(row: dict[str, Any]) -> tuple:
        v = row.get(field)
        return (v is None, v if v is not None else 0)

    ordered = sorted(rows, key=value, reverse=sort.startswith("-"))
    if sort.startswith("-"):  # keep rows without a value last either way
        ordered = [r for r in ordered if r.get(field) is not None] + [
            r for r in ordered if r.get(field) is None
        ]
    return ordered, sort


def _dashboard_context(request: HttpRequest, project: Project, report: dict[str, Any]) -> dict[str, Any]:
    members = {
        m.user_id: m
        for m in Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    }
    names = {user_id: m.user.username for user_id, m in members.items()}
    rows = [{**row, "name": _name(names, row["rater"]), "membership": members.get(row["rater"])}
            for row in report["annotators"]]  # fmt: skip
    annotators, sort = _sorted_annotators(rows, request.GET.get("sort", ""))
    heat = _rendered_heatmap(project, report, names)
    days = report["over_time"]
    x_labels = {float(i): d["day"][5:] for i, d in enumerate(days)}
    over_time = charts.line_chart(
        [
            ("percent agreement", [(float(i), d["percent_agreement"]) for i, d in enumerate(days)
                                   if d["percent_agreement"] is not None]),
            ("alpha", [(float(i), d["alpha"]) for i, d in enumerate(days) if d["alpha"] is not None]),
        ],
        y_range=(-0.2, 1.0) if any((d["alpha"] or 0) < 0 for d in days) else (0.0, 1.0),
        x_labels=x_labels,
        y_label="agreement on the pairs last judged that day",
    )  # fmt: skip
    board = report["leaderboard"]
    computed_at = datetime.fromisoformat(report["computed_at"])
    win_rows = []
    if board:
        table = board["win_rate"]
        for model, rates, counts in zip(table["models"], table["rate"], table["battles"], strict=True):
            win_rows.append({"model": model, "cells": list(zip(rates, counts, strict=True))})
    return {
        "project": project,
        "report": report,
        "judge_sections": _judge_sections(project, report),
        "annotators": annotators,
        "annotator_columns": ANNOTATOR_COLUMNS,
        "sort": sort,
        "heatmap": heat,
        "heatmap_wide": heat is not None and heat["width"] > HEATMAP_HALF_WIDTH,
        "no_variation_mark": NO_VARIATION_MARK,
        "under_k": review.pairs_left_under_k(project).count() if report["settings"]["excluded"] else 0,
        "over_time": over_time,
        "win_rows": win_rows,
        "computed_at": computed_at,
        "computed_today": timezone.localdate(computed_at) == timezone.localdate(),
        "refresh_seconds": review.refresh_seconds(),
    }


def _judge_sections(project: Project, report: dict[str, Any], *, limit: int = 3) -> list[dict[str, Any]]:
    """The calibration of the project's newest AI judges that have verdicts (evaluation's), measured
    against the same people's consensus. Kept in the shared cache with the report it goes with: the
    numbers follow the report's own refresh (and a judge's progress), not every page load."""
    from evaluation.judge_jobs import human_labels
    from evaluation.models import Judge
    from evaluation.views import calibration_section

    judges = list(Judge.objects.filter(project=project, done__gt=0).select_related("project")[:limit])
    if not judges:
        return []
    versions = "-".join(f"{j.pk}.{j.done}.{j.state}" for j in judges)
    key = f"review-judges:{project.pk}:{report['computed_at']}:{versions}"
    shared = caches[shared_cache.ALIAS]
    numbers = shared.get(key)
    if numbers is None:
        people = human_labels(project)
        numbers = [
            calibration_section(j, people=people, annotators=report["annotators"])["c"] for j in judges
        ]
        shared.set(key, numbers, JUDGE_SECTIONS_TTL)
    return [calibration_section(j, numbers=c) for j, c in zip(judges, numbers, strict=True)]


def _name(names: dict[int, str], user_id: int) -> str:
    return names.get(user_id, f"user {user_id}")  # someone no longer a member


def _rendered_heatmap(
    project: Project, report: dict[str, Any], names: dict[int, str]
) -> dict[str, Any] | None:
    """The kappa heatmap, rendered: {"labels", "svg", "width"}; None under two annotators.

    Its cells (2,500 for 50 annotators) take most of the page's rendering time, so renderings are kept in
    the shared cache by the time their report was computed: the newest two, the one pages show and the
    next one, rendered before its report is kept (`_heatmap_prepare`)."""
    kappa = report["cohen_kappa"]
    if len(kappa["raters"]) < 2:
        return None
    labels = [_name(names, rater) for rater in kappa["raters"]]
    shared, key = caches[shared_cache.ALIAS], f"review:{project.pk}:heatmaps"
    kept = shared.get(key) or {}
    heat = kept.get(report["computed_at"])
    if heat is not None and heat["labels"] == labels:
        return heat
    chart = _kappa_heatmap(labels, kappa, report["settings"]["min_shared"])
    svg = render_to_string("partials/_heatmap.html", {"chart": chart, "title": HEATMAP_TITLE})
    heat = {"labels": labels, "svg": svg, "width": chart.width}
    newest = dict(sorted({**kept, report["computed_at"]: heat}.items())[-2:])
    shared.set(key, newest, review.REPORT_TTL)
    return heat


def _undefined_kappa(why: str | None, shared: int, min_shared: int) -> tuple[str, str] | None:
    """(mark, reason) of a kappa cell without a value (`review_stats._kappa_matrix`'s `undefined`)."""
    if why == "too_few_shared":
        return "–", f"too few shared pairs ({shared} of the {min_shared} needed)"
    if why == "no_variation":
        return (
            NO_VARIATION_MARK,
            f"undefined: no variation (both chose one label on all {shared} shared pairs)",
        )
    return None


def _kappa_heatmap(names: list[str], kappa: dict[str, Any], min_shared: int) -> charts.Heatmap:
    """The pairwise kappa matrix as a heatmap whose undefined cells say why."""
    undefined = [
        [
            ("", "the same annotator") if i == j else _undefined_kappa(why, shared, min_shared)
            for j, (why, shared) in enumerate(zip(whys, counts, strict=True))
        ]
        for i, (whys, counts) in enumerate(zip(kappa["undefined"], kappa["shared"], strict=True))
    ]
    fit = (HEATMAP_FIT_WIDTH - 1.5 * HEATMAP_MARGIN - 4) // max(len(names), 1)
    cell = min(HEATMAP_CELL, max(HEATMAP_MIN_CELL, fit))
    return charts.heatmap(names, kappa["matrix"], undefined=undefined, cell=cell, margin=HEATMAP_MARGIN)


@requires(REVIEW)
@require_http_methods(["GET", "POST"])
def review_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The dashboard, from the project's latest report (review.review_report says when it is recomputed);
    a POST is the Refresh button, which recomputes it now."""
    project = _lead_project(request, slug)
    refresh = request.method == "POST"
    report = review.review_report(project, refresh=refresh)
    if refresh and not request.htmx:  # back to a GET, so that reloading the page does not recompute again
        return redirect(request.get_full_path())
    context = _dashboard_context(request, project, report)
    # The refresh button, the sortable table and the re-queue swap only the numbers.
    template = "labeling/review.html#review-numbers" if request.htmx else "labeling/review.html"
    response = render(request, template, context)
    review.report_refresh_start(project, report, prepare=_heatmap_prepare)
    return response


def _heatmap_prepare(project: Project, report: dict[str, Any]) -> None:
    """The heatmap of a report recomputed after a response, rendered there too, before the report is kept
    (review.report_refresh_start's `prepare`), so that no page load waits for it."""
    names = dict(Membership.objects.filter(project=project).values_list("user_id", "user__username"))
    _rendered_heatmap(project, report, names)


@requires(REVIEW)
@require_POST
def pairs_requeue(request: HttpRequest, slug: str) -> HttpResponse:
    """Re-queue the pairs that exclusions left under k; htmx gets the dashboard's numbers back."""
    project = _lead_project(request, slug)
    text = _requeued_text(review.pairs_requeue(project=project), project)
    if not request.htmx:
        messages.success(request, text)
        return redirect(reverse("labeling:review-dashboard", args=[project.slug]) + "#headline")
    context = _dashboard_context(request, project, review.review_report(project))
    return render(request, "labeling/review.html#review-numbers", {**context, "requeued": text})


def _requeued_text(count: int, project: Project) -> str:
    k = project.overlap
    if not count:
        return "No pair needed re-queueing: every pair can still reach its k counted judgments."
    if count == 1:
        return (
            f"1 pair re-queued: it goes first to annotators who have not seen it, until {k} of its "
            "judgments count."
        )
    return (
        f"{count} pairs re-queued: they go first to annotators who have not seen them, until {k} of their "
        "judgments count."
    )


@requires(REVIEW)
@require_POST
def member_exclude(request: HttpRequest, slug: str, member_id: int) -> HttpResponse:
    project = _lead_project(request, slug)
    membership = get_object_or_404(Membership, pk=member_id, project=project)
    excluded = request.POST.get("excluded") == "1"
    review.membership_set_excluded(membership=membership, excluded=excluded)
    if request.htmx:  # the table shows the change; a message would only surface on a later page
        report = review.review_report(project)
        return render(
            request, "labeling/review.html#review-numbers", _dashboard_context(request, project, report)
        )
    verb = "left out of" if excluded else "counted again in"
    text = f"{membership.user.username}'s judgments are {verb} agreement and consensus."
    if under_k := review.pairs_left_under_k(project).count():
        pairs = "1 pair now stays" if under_k == 1 else f"{under_k} pairs now stay"
        text += f" {pairs} under k: the Review page offers to re-queue them."
    messages.success(request, text)
    return redirect(reverse("labeling:review-dashboard", args=[project.slug]) + "#annotators")


@requires(REVIEW)
@require_GET
def disagreement_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = _lead_project(request, slug)
    report = review.review_report(project)
    items = review.split_pairs(report)
    page = Paginator(items, 50).get_page(request.GET.get("page"))
    pairs = Pair.objects.in_bulk([item["item"] for item in page.object_list])
    adjudicated = set(Adjudication.objects.filter(pair_id__in=pairs).values_list("pair_id", flat=True))
    rows = [(item, pairs.get(item["item"]), item["item"] in adjudicated) for item in page.object_list]
    context = {"project": project, "page": page, "rows": rows, "report": report}
    return render(request, "labeling/disagreements.html", context)


@requires(REVIEW)
@require_http_methods(["GET", "POST"])
def pair_adjudicate(request: HttpRequest, slug: str, pair_id: int) -> HttpResponse:
    project = _lead_project(request, slug)
    pair = get_object_or_404(Pair, pk=pair_id, project=project)
    existing = Adjudication.objects.filter(pair=pair).select_related("decided_by").first()
    form = AdjudicationForm(request.POST or None, instance=existing)
    if request.method == "POST":
        if request.POST.get("action") == "clear":
            if review.pair_adjudication_clear(pair=pair):
                messages.success(request, "The final label is removed: the votes decide again.")
            return redirect("labeling:pair-adjudicate", project.slug, pair.pk)
        if form.is_valid():
            review.pair_adjudicate(
                pair=pair, label=form.cleaned_data["label"], note=form.cleaned_data["note"], user=request.user
            )
            messages.success(request, "Final label saved. It overrides the votes at export.")
            return redirect("labeling:pair-adjudicate", project.slug, pair.pk)
    votes = review.pair_votes(project, pair)
    context = {
        "project": project,
        "pair": pair,
        "shown": shown(pair, a_on_left=True, plain=request.GET.get("plain") == "1"),
        "votes": votes,
        "counts": review.vote_counts(votes),
        "adjudication": existing,
        "form": form,
        "wanted": project.overlap + pair.extra_wanted,
        "next_split": review.next_split_pair(project, after=pair.pk),
        "annotators_left": review.annotators_left(pair),
    }
    return render(request, "labeling/pair_adjudicate.html", context, status=400 if form.errors else 200)


@requires(REVIEW)
@require_POST
def pair_send_back(request: HttpRequest, slug: str, pair_id: int) -> HttpResponse:
    project = _lead_project(request, slug)
    pair = get_object_or_404(Pair, pk=pair_id, project=project)
    wanted = project.overlap + review.pair_send_back(pair=pair)
    if review.annotators_left(pair):
        messages.success(
            request,
            f"Sent back: the pair now wants {wanted} judgments and goes to the next free annotator first.",
        )
    else:
        messages.warning(
            request,
            f"Sent back: the pair now wants {wanted} judgments, but no one is left to judge it: every "
            "active annotator of this project has already seen it. Invite more annotators: the first "
            "new one gets it first.",
        )
    return redirect("labeling:pair-adjudicate", project.slug, pair.pk)
