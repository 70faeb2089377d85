"""What leads review: the project's agreement report (the latest one kept for every process, recomputed at
most once per interval while judgments stream in), the disagreement queue, adjudication, sending pairs back
(and who is left to judge them), leaving annotators out of consensus, and re-queueing the pairs that leaves
under k.

The statistics themselves are pure (labeling/agreement.py); this module gathers their input from the
database and records the lead's decisions.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.core.cache import cache, caches
from django.core.signals import request_finished
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet
from django.db.models.functions import Greatest, Length, TruncDate
from django.dispatch import receiver
from django.utils import timezone

from labeling.models import Adjudication, Assignment, Choice, Judgment, Membership, Pair, Project
from prefstudio import shared_cache

if TYPE_CHECKING:
    from labeling import review_stats

# The statistics modules load scipy (60 MB) and are imported where they are used: an export worker
# imports this module for the exclusions, and only a Dawid–Skene export needs them.

log = logging.getLogger(__name__)

REPORT_TTL = 24 * 3600  # a project nobody reviews for a day gives its report's memory back
REFRESH_SECONDS = 30  # the default of settings.PREFSTUDIO_REVIEW_REFRESH_SECONDS
REFRESH_LOCK_SECONDS = 120  # a recompute whose process died is tried again after this
BOOTSTRAP_SAMPLES = 1000
MIN_SHARED = 5  # pairs two annotators must share for their Cohen's kappa to be shown
QUEUE_LIMIT = 1000  # pairs listed in the disagreement queue (the report gives the total too)


def judgment_table(project: Project) -> review_stats.JudgmentTable:
    """Every judgment of the project as parallel arrays, from one query."""
    from labeling import review_stats

    rows = (
        Judgment.objects.filter(pair__project=project)
        .order_by()
        .values_list(
            "pair_id",
            "annotator_id",
            "choice",
            "strength",
            "a_on_left",
            Length("pair__response_a"),
            Length("pair__response_b"),
            "pair__gold",
            "seconds_spent",
            TruncDate("created_at"),
            "criteria",
            "pair__model_a",
            "pair__model_b",
            "pair__original_label",
        )
    )
    return review_stats.JudgmentTable.from_rows(rows, criteria=[c["name"] for c in project.criteria or []])


def _settings_version(project: Project, excluded: frozenset[int]) -> str:
    """What a lead changes and must see at once: the exclusions and the project's settings (any save of the
    project; created_at tells a project from an earlier one that had its id)."""
    parts = (project.created_at, project.updated_at, project.overlap, project.use_strength, project.criteria,
             sorted(excluded))  # fmt: skip
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def _judgments_version(project: Project) -> tuple[int, str]:
    """(how many judgments, when the last one was made or edited): one aggregate over the project's
    judgments. Both only grow (judgments are never deleted), so an equal pair means nothing changed."""
    row = Judgment.objects.filter(pair__project=project).aggregate(n=Count("id"), last=Max("updated_at"))
    return row["n"], row["last"].isoformat() if row["last"] else ""


def excluded_annotators(project: Project) -> frozenset[int]:
    return frozenset(
        Membership.objects.filter(project=project, excluded=True).values_list("user_id", flat=True)
    )


def refresh_seconds() -> float:
    return getattr(settings, "PREFSTUDIO_REVIEW_REFRESH_SECONDS", REFRESH_SECONDS)


Prepare = Callable[[Project, dict[str, Any]], Any]


def _report_key(project_id: int) -> str:
    return f"review:{project_id}"


def _lock_key(project_id: int) -> str:
    return f"review:{project_id}:computing"


def review_report(project: Project, *, refresh: bool = False) -> dict[str, Any]:
    """`review_stats.project_report` for the project, with `computed_at` (ISO, UTC) and `newer_judgments`:
    None when the report counts every judgment; else how many were made since (0 when some were only
    edited).

    The latest report of each project is kept in the shared cache, for every process, and served while no
    judgment comes in. While judgments stream in, it is served until it is `refresh_seconds()` old; a page
    that shows it older than that has it recomputed once its response is sent (`report_refresh_start`),
    and the next load gets the new one. A report nobody has looked at for two intervals is recomputed
    before it is shown. Either way one process at a time recomputes a project's report (a lock in the
    shared cache; the others serve the old one meanwhile). The lead's own changes (exclusions, the
    project's settings) and `refresh` (the Refresh button) recompute it at once, as does a cold or
    unanswering shared cache.
    """
    shared = caches[shared_cache.ALIAS]
    excluded = excluded_annotators(project)
    version, judgments = _settings_version(project, excluded), _judgments_version(project)
    entry = None if refresh else shared.get(_report_key(project.pk))
    if entry is None or entry["settings"] != version:
        return _report_compute(project, excluded, version, judgments)
    report = entry["report"]
    if entry["judgments"] == judgments:
        return {**report, "newer_judgments": None}
    if _age(report) < 2 * refresh_seconds() or not shared.add(_lock_key(project.pk), 1, REFRESH_LOCK_SECONDS):
        return {**report, "newer_judgments": max(0, judgments[0] - entry["judgments"][0])}
    try:
        return _report_compute(project, excluded, version, judgments)
    finally:
        shared.delete(_lock_key(project.pk))


def report_refresh_start(project: Project, report: dict[str, Any], *, prepare: Prepare | None = None) -> bool:
    """After a page showed `report` (from `review_report`): if it is out of date and `refresh_seconds()`
    old, recompute it once this request's response has been sent, one at a time per project across
    processes; whether one was planned. `prepare(project, new_report)` then runs too, so that what the
    page derives from the report (its rendered heatmap) is ready for the next load.

    After the response, not on a thread beside the next requests: a gunicorn sync worker takes no other
    request meanwhile, and the statistics (long numpy calls that hold the GIL) slow no page."""
    if report["newer_judgments"] is None or _age(report) < refresh_seconds():
        return False
    if not caches[shared_cache.ALIAS].add(_lock_key(project.pk), 1, REFRESH_LOCK_SECONDS):
        return False
    _after_response.work.append(lambda: _report_refresh(project.pk, prepare))
    return True


class _AfterResponse(threading.local):
    """What this thread runs once its response has been sent (request_finished)."""

    def __init__(self) -> None:
        self.work: list[Callable[[], None]] = []


_after_response = _AfterResponse()


@receiver(request_finished, dispatch_uid="labeling.review.after_response")
def _run_after_response(**kwargs: Any) -> None:
    work, _after_response.work = _after_response.work, []
    for run in work:
        run()


def _age(report: dict[str, Any]) -> float:
    return (timezone.now() - datetime.fromisoformat(report["computed_at"])).total_seconds()


def _report_compute(
    project: Project,
    excluded: frozenset[int],
    version: str,
    judgments: tuple[int, str],
    prepare: Prepare | None = None,
) -> dict[str, Any]:
    """Compute the report and keep it with the versions read before it (a judgment made meanwhile makes
    the kept report look older than it is, never newer); `prepare(project, report)` runs before it is
    kept, so that no page shows it before what it derives from it is ready."""
    from labeling import review_stats

    computed_at = timezone.now()  # what "as of" means: the judgments are read after this
    report = review_stats.project_report(
        judgment_table(project),
        excluded=excluded,
        overlap=project.overlap,
        use_strength=project.use_strength,
        n_boot=BOOTSTRAP_SAMPLES,
        seed=0,
        list_limit=QUEUE_LIMIT,
        min_shared=MIN_SHARED,
    )
    report["computed_at"] = computed_at.isoformat()
    if prepare is not None:
        prepare(project, {**report, "newer_judgments": None})
    entry = {"settings": version, "judgments": judgments, "report": report}
    caches[shared_cache.ALIAS].set(_report_key(project.pk), entry, REPORT_TTL)
    return {**report, "newer_judgments": None}


def _report_refresh(project_id: int, prepare: Prepare | None) -> None:
    """Recompute a project's report after a response, then let the next one start."""
    try:
        project = Project.objects.get(pk=project_id)
        excluded = excluded_annotators(project)
        version, judgments = _settings_version(project, excluded), _judgments_version(project)
        _report_compute(project, excluded, version, judgments, prepare)
    except Exception:  # the page was answered: nobody to raise to; the next stale page load tries again
        log.exception("review report of project %s: the background recompute failed", project_id)
    finally:
        caches[shared_cache.ALIAS].delete(_lock_key(project_id))


@dataclass(frozen=True, eq=False)
class Posteriors:
    """Dawid–Skene posteriors of the project's pairs: `items` (N,) sorted pair ids, `labels` (K,),
    `matrix` (N, K) probabilities; `label_noise`: the model's estimate (agreement.DawidSkeneResult)."""

    items: np.ndarray
    labels: tuple[str, ...]
    matrix: np.ndarray
    label_noise: float | None

    def get(self, pair_id: int) -> dict[str, float] | None:
        """label -> probability for one pair; None when it has no counted judgment."""
        i = int(np.searchsorted(self.items, pair_id))
        if i == len(self.items) or self.items[i] != pair_id:
            return None
        return dict(zip(self.labels, self.matrix[i].tolist(), strict=True))

    def __contains__(self, pair_id: int) -> bool:
        return self.get(pair_id) is not None

    def __bool__(self) -> bool:
        return len(self.items) > 0


_CODES = {label: i for i, label in enumerate(Choice.values)}
RATINGS_CHUNK = 20_000
CACHE_RATINGS = 500_000


def _ratings(project: Project, excluded: frozenset[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair ids, annotator ids, choice codes in Choice order) of the counted judgments, read in chunks
    into arrays: a million judgments take 17 MB, not the 400 MB of a list of rows."""
    judgments = Judgment.objects.filter(pair__project=project).exclude(annotator_id__in=excluded)
    n = judgments.count()
    item, rater, label = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    i = 0
    for i, (pair_id, annotator_id, choice) in enumerate(  # noqa: B007 (i counts the rows read)
        judgments.order_by()
        .values_list("pair_id", "annotator_id", "choice")
        .iterator(chunk_size=RATINGS_CHUNK)
    ):
        if i >= n:  # judgments added since the count: the next export takes them
            break
        item[i], rater[i], label[i] = pair_id, annotator_id, _CODES[choice]
    end = min(n, i + 1) if n else 0
    return item[:end], rater[:end], label[:end]


def dawid_skene_posteriors(project: Project) -> Posteriors:
    """Dawid–Skene over the project's counted judgments (excluded annotators left out): each pair's
    posterior over labels, for the export's "dawid-skene" rule and its noise estimate."""
    from labeling import agreement

    excluded = excluded_annotators(project)
    n, last = _judgments_version(project)
    key = f"prefstudio:ds:{project.pk}:{_settings_version(project, excluded)}:{n}:{last}"
    if (cached := cache.get(key)) is not None:
        return cached
    item, rater, label = _ratings(project, excluded)
    if len(item) == 0:
        return Posteriors(np.empty(0, np.int64), tuple(Choice.values), np.empty((0, 4)), None)
    fit = agreement.dawid_skene(agreement.Ratings.from_arrays(item, rater, label))
    labels = tuple(Choice.values[code] for code in fit.labels)
    posteriors = Posteriors(np.asarray(fit.items, dtype=np.int64), labels, fit.posterior, fit.label_noise)
    if len(item) <= CACHE_RATINGS:  # the preview asks again as the rules change; huge fits are not kept
        cache.set(key, posteriors, REPORT_TTL)
    return posteriors


@dataclass(frozen=True)
class Vote:
    """One judgment as the adjudication page lists it."""

    judgment: Judgment
    excluded: bool

    @property
    def shown_left(self) -> str:
        return "A" if self.judgment.a_on_left else "B"


def pair_votes(project: Project, pair: Pair) -> list[Vote]:
    excluded = excluded_annotators(project)
    judgments = pair.judgments.select_related("annotator").order_by("created_at")
    return [Vote(j, j.annotator_id in excluded) for j in judgments]


def vote_counts(votes: list[Vote]) -> dict[str, int]:
    """Counted votes per choice (excluded annotators left out), in the order of `Choice`."""
    counts = dict.fromkeys(Choice.values, 0)
    for vote in votes:
        if not vote.excluded:
            counts[vote.judgment.choice] += 1
    return counts


def pair_adjudicate(*, pair: Pair, label: str, note: str, user: Any) -> Adjudication:
    """Set the pair's final label (it overrides the votes at export); replaces an earlier one."""
    if label not in Choice.values:
        raise ValueError(f"label: {label!r} is not one of {', '.join(Choice.values)}")
    adjudication, _ = Adjudication.objects.update_or_create(
        pair=pair, defaults={"label": label, "note": note.strip(), "decided_by": user}
    )
    return adjudication


def pair_adjudication_clear(*, pair: Pair) -> bool:
    """Remove the pair's final label, so its votes decide again; whether there was one."""
    deleted, _ = Adjudication.objects.filter(pair=pair).delete()
    return bool(deleted)


def pair_send_back(*, pair: Pair) -> int:
    """Ask for one more judgment of this pair: its wanted count rises by one, and to one more than the
    judgments and leases it already has (a pair can hold more than k, say after k was lowered), so the
    workbench offers it (first, to annotators who have not seen it) until that judgment arrives. The
    new extra_wanted (judgments wanted beyond k)."""
    more = Greatest(F("extra_wanted") + 1, F("taken") + 1 - pair.project.overlap)
    with transaction.atomic():
        Pair.objects.filter(pk=pair.pk).update(extra_wanted=more)
        pair.refresh_from_db(fields=["extra_wanted"])
    return pair.extra_wanted


def annotators_left(pair: Pair) -> int:
    """How many of the project's annotators could still judge this pair: active, not excluded, and never
    handed it (a claim never hands a pair to anyone twice, skipped or expired) nor judging it otherwise."""
    handed = Assignment.objects.filter(pair=pair, annotator=OuterRef("user"))
    judged = Judgment.objects.filter(pair=pair, annotator=OuterRef("user"))
    return (
        Membership.objects.filter(
            project_id=pair.project_id, role=Membership.Role.ANNOTATOR, active=True, excluded=False
        )
        .filter(~Exists(handed), ~Exists(judged))
        .count()
    )


def pairs_left_under_k(project: Project) -> QuerySet[Pair]:
    """The non-gold pairs that leaving the excluded annotators out keeps under k for good, annotated with
    `left_out` (their excluded judgments) and `counted` (the others).

    A pair wants k + extra_wanted judgments and stops being handed out when it has them; of those,
    `left_out` do not count, so it ends with k + extra_wanted - left_out counted ones. It stays under k
    when it has fewer than k counted judgments and left_out > extra_wanted."""
    excluded = excluded_annotators(project)
    if not excluded:
        return Pair.objects.none()
    theirs = Q(judgments__annotator_id__in=excluded)
    judged_by_them = Judgment.objects.filter(pair__project=project, annotator_id__in=excluded)
    return (
        Pair.objects.filter(project=project, gold="", pk__in=judged_by_them.values("pair_id"))
        .annotate(left_out=Count("judgments", filter=theirs), counted=Count("judgments", filter=~theirs))
        .filter(counted__lt=project.overlap, left_out__gt=F("extra_wanted"))
    )


def pairs_requeue(*, project: Project) -> int:
    """Hand the pairs `pairs_left_under_k` finds out again, as sent-back pairs are: each one's
    extra_wanted becomes its count of excluded judgments, so that it wants judgments until k of them
    count, and claims offer it first to annotators who have not seen it. How many pairs; running it
    again re-queues nothing more (a wanted count only ever rises here)."""
    with transaction.atomic():
        rows = list(pairs_left_under_k(project).values_list("pk", "left_out"))
        by_count: dict[int, list[int]] = defaultdict(list)
        for pk, left_out in rows:
            by_count[left_out].append(pk)
        for left_out, pks in by_count.items():
            Pair.objects.filter(pk__in=pks, extra_wanted__lt=left_out).update(extra_wanted=left_out)
    return len(rows)


def membership_set_excluded(*, membership: Membership, excluded: bool) -> Membership:
    """Leave an annotator's judgments out of agreement headlines, consensus and export (they stay
    stored), or bring them back."""
    membership.excluded = excluded
    membership.save(update_fields=["excluded"])
    return membership


def split_pairs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's disagreement queue (most split first)."""
    return report["disagreements"]["items"]


def next_split_pair(project: Project, *, after: int) -> int | None:
    """The pair after `after` in the disagreement queue (the first one if `after` is not in it)."""
    items = [item["item"] for item in split_pairs(review_report(project))]
    if after in items:
        index = items.index(after) + 1
        return items[index] if index < len(items) else None
    return items[0] if items else None
