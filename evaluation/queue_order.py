"""Label what matters first: the annotators' queue ordered by an AI judge's uncertainty (issue #28).

When a project orders its queue by the judge (`Project.queue_order`), its pairs are ranked from the
verdicts of its newest succeeded judge run, and `labeling.assignment.set_queue_ranks` stores the ranks
the claim orders fresh pairs by. Ranks only change which fresh pair comes next: overlap k, leases and
never serving a pair twice to one annotator are the claim's and hold unchanged. Pairs the judge has not
judged (imported later) or could not read count as least sure and come first.
"""

from __future__ import annotations

from typing import Any

from evaluation.models import Judge, JudgeVerdict
from labeling import assignment

UNCERTAIN = "judge-uncertain"
INCONSISTENT = "judge-inconsistent"


def ranking_judge(project: Any) -> Judge | None:
    """The judge run a project's queue is ranked by: its newest succeeded one."""
    return Judge.objects.filter(project=project, state=Judge.State.SUCCEEDED).order_by("-finished_at").first()


def uncertainty(p_a: float | None, p_b: float | None) -> float:
    """How far the judge's probability that A beats B (a tie set aside) is from a coin flip: 0 (least
    sure) to 0.5 (sure); 0 when it gave no readable verdict."""
    if p_a is None or p_b is None or p_a + p_b <= 0:
        return 0.0
    return abs(p_a / (p_a + p_b) - 0.5)


def ranks(judge: Judge, order: str) -> dict[int, int]:
    """Pair id -> rank (1 first) of the pairs `judge` judged, for `order`: least sure first
    (UNCERTAIN), or position-inconsistent first, then least sure (INCONSISTENT); pair id breaks ties."""
    rows = JudgeVerdict.objects.filter(judge=judge).values_list("pair_id", "p_a", "p_b", "inconsistent")

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        pair_id, p_a, p_b, inconsistent = row
        first = (not inconsistent,) if order == INCONSISTENT else ()
        return (*first, uncertainty(p_a, p_b), pair_id)

    return {row[0]: rank for rank, row in enumerate(sorted(rows, key=key), start=1)}


def rank_project(project: Any) -> int:
    """Rank the project's pairs for its queue order (clearing ranks for the oldest-first order); pairs
    ranked."""
    order = getattr(project, "queue_order", "oldest")
    judge = ranking_judge(project) if order in (UNCERTAIN, INCONSISTENT) else None
    if judge is None:
        assignment.clear_queue_ranks(project)
        return 0
    when = judge.finished_at.strftime("%Y-%m-%d %H:%M") if judge.finished_at else "?"
    ranked_by = f"judge “{judge.name}” (run {judge.pk}, {judge.model_ref}, finished {when} UTC)"
    return assignment.set_queue_ranks(project, ranks(judge, order), ranked_by=ranked_by)


def on_queue_order_changed(sender: Any, project: Any, **kwargs: Any) -> None:
    """labeling.signals.queue_order_changed: rank (or unrank) the project's pairs for its new order, in a
    worker of the default queue (re-ranking 100,000 pairs takes seconds, which a settings page should not
    wait for); here and now when the queue does not answer."""
    from prefstudio import jobs

    try:
        jobs.enqueue("default", "evaluation.tasks.rank_queue", project.pk, job_timeout=3600)
    except jobs.QueueUnavailable:
        rank_project(project)
