"""Evaluation rounds from the app's side: create one (held-out prompts, an evaluation project with the
source's rubric and people, a generation job of the models' answers), and read the judgments back as win
rates, a leaderboard and a comparison of runs (statistics in evaluation.stats)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import transaction
from django.utils.text import slugify

from evaluation import stats
from evaluation.models import EvaluationRound
from generation import services as generation
from generation.models import GenerationJob
from labeling import agreement
from labeling.models import Judgment, Membership, Pair, Project
from labeling.review import excluded_annotators

# A verdict as the score of model A: ties and "both bad" count half, as in the Review leaderboard.
SCORE_OF_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
N_BOOT = 2000


def held_out_prompts(run: Any) -> tuple[list[Any], int]:
    """The eval prompts of the run's snapshot that are not also among its training prompts (a prompt in
    both splits is left out), and how many were left out for that reason."""
    train = {generation.prompt_key(p) for p in generation.prompts_from_snapshot(run.snapshot, split="train",
                                                                                limit=10**7)}  # fmt: skip
    prompts = generation.prompts_from_snapshot(run.snapshot, split="eval")
    kept = [p for p in prompts if generation.prompt_key(p) not in train]
    return kept, len(prompts) - len(kept)


def evaluation_project(source: Project, *, name: str, user: Any = None) -> Project:
    """A new project for an evaluation: the source's rubric, criteria, verdict options and overlap, and
    its active annotators and leads as members (and the user who asked, as lead)."""
    base = slugify(name)[:50] or "evaluation"
    slug, n = base, 1
    while Project.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    project = Project.objects.create(
        slug=slug, name=name[:200], rubric=source.rubric, criteria=source.criteria,
        allow_tie=source.allow_tie, allow_both_bad=source.allow_both_bad, use_strength=source.use_strength,
        overlap=source.overlap,
        description=f"Blind evaluation: model answers, the models never shown. Rubric of {source.name}.",
    )  # fmt: skip
    members = Membership.objects.filter(project=source, active=True, excluded=False)
    Membership.objects.bulk_create(
        [Membership(project=project, user_id=m.user_id, role=m.role) for m in members], ignore_conflicts=True
    )
    if user is not None:
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Membership.Role.LEAD})
    return project


def round_create(
    *,
    user: Any,
    run: Any = None,
    model_refs: list[str] | None = None,
    project: Project | None = None,
    source: Project | None = None,
    prompts: list[Any] | None = None,
    prompts_note: str = "",
    max_new_tokens: int = 256,
    seed: int = 0,
) -> EvaluationRound:
    """Start an evaluation round: with `run`, its base against it on the held-out eval prompts of its
    snapshot; else `model_refs` (two or more) on `prompts`. The pairs go to `project`, or to a new
    evaluation project with the rubric and people of the run's project (or of `source`). Greedy answers,
    `seed` recorded. ValueError (the message names the field) or prefstudio.jobs.QueueUnavailable, with
    nothing stored."""
    source = run.snapshot.project if run is not None else (source or project)
    if run is not None:
        model_refs = [f"base:{run.base_model}", f"run:{run.pk}"]
        if prompts is None:
            prompts, overlap = held_out_prompts(run)
            prompts_note = (
                f"{len(prompts)} held-out eval prompts of run {run.pk}'s snapshot (never its training prompts"
                + (f"; {overlap} that were also training prompts left out)" if overlap else ")")
            )
    if not model_refs or len(set(model_refs)) < 2:
        raise ValueError("models: an evaluation compares two or more models")
    if not prompts:
        raise ValueError("prompts: none to evaluate on (the snapshot has no eval split?)")
    if source is None:
        raise ValueError("project: choose the evaluation project")
    with transaction.atomic():
        # Named without the models: annotators see the project's name.
        count = EvaluationRound.objects.filter(source_project=source).count() + 1
        target = project or evaluation_project(
            source, name=f"Blind evaluation {count} of {source.name}", user=user
        )
        job = generation.job_create(
            kind=GenerationJob.Kind.EVALUATION, user=user, model_refs=model_refs, prompts=prompts,
            source=prompts_note or f"{len(prompts)} prompts", project=target, run=run,
            params={"max_new_tokens": max_new_tokens, "temperature": 0.0, "top_p": 1.0, "seed": seed},
        )  # fmt: skip
        return EvaluationRound.objects.create(
            project=target, source_project=source, run=run, model_refs=job.model_refs, generation_job=job,
            prompts_note=prompts_note or f"{len(prompts)} prompts", created_by=user,
        )  # fmt: skip


def _judgments(pairs: Any, project: Project) -> list[tuple[Pair, Judgment]]:
    excluded = excluded_annotators(project)
    rows = (
        Judgment.objects.filter(pair__in=pairs, is_gold=False)
        .exclude(annotator_id__in=excluded)
        .select_related("pair")
        .order_by("pair_id", "pk")
    )
    return [(j.pair, j) for j in rows]


def round_pairs(round_: EvaluationRound) -> Any:
    job = round_.generation_job
    if job is None or job.batch_id is None:
        return Pair.objects.none()
    return Pair.objects.filter(batch_id=job.batch_id)


def round_results(round_: EvaluationRound) -> dict[str, Any]:
    """What people said of the round: for two models, the second's (the run's) win rate over the first
    (the base) with its interval, per criterion, the counts, and the annotators' agreement."""
    pairs = round_pairs(round_)
    judged = _judgments(pairs, round_.project)
    out: dict[str, Any] = {"pairs": pairs.count(), "judgments": len(judged), "win_rate": None, "criteria": {}}
    if len(round_.model_refs) == 2:
        base, tuned = round_.model_refs
        scores: dict[str, list[float]] = defaultdict(list)
        by_criterion: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for pair, judgment in judged:
            tuned_is_a = pair.model_a == tuned
            key = generation.prompt_key(pair.prompt)
            score = SCORE_OF_A[judgment.choice]
            scores[key].append(score if tuned_is_a else 1.0 - score)
            for name, choice in (judgment.criteria or {}).items():
                if choice in SCORE_OF_A:
                    s = SCORE_OF_A[choice]
                    by_criterion[name][key].append(s if tuned_is_a else 1.0 - s)
        if not scores:
            return {**out, "alpha": None}
        rate = stats.win_rate(scores, n_boot=N_BOOT, seed=round_.pk)
        out["win_rate"] = rate
        out["sentence"] = rate.sentence(_short(tuned), _short(base))
        out["criteria"] = stats.per_criterion_win_rates(by_criterion, n_boot=N_BOOT, seed=round_.pk)
    triples = [(pair.pk, judgment.annotator_id, judgment.choice) for pair, judgment in judged]
    out["alpha"] = agreement.krippendorff_alpha(triples) if triples else None
    return out


def _short(ref: str) -> str:
    """How a model is named in a sentence: "run 12 (tuned)" / "the base" style short names."""
    kind, _, name = ref.partition(":")
    return {"run": f"run {name} (tuned)", "base": f"{name} (base)", "endpoint": name}.get(kind, ref)


def project_battles(project: Project) -> list[tuple[str, str, str, int, int]]:
    """Every judged evaluation pair of the project as a battle (model_a, model_b, "x" | "y" | "tie",
    characters of answer A, of answer B)."""
    pairs = Pair.objects.filter(project=project, batch__evaluation=True)
    outcome = {"a": "x", "b": "y", "tie": "tie", "both_bad": "tie"}
    return [
        (pair.model_a, pair.model_b, outcome[j.choice], len(pair.response_a), len(pair.response_b))
        for pair, j in _judgments(pairs, project)
        if pair.model_a and pair.model_b and pair.model_a != pair.model_b
    ]


def project_leaderboard(project: Project, *, style: bool = False) -> dict | None:
    """Bradley–Terry strengths with intervals and the win-rate matrix of every model evaluated in the
    project (`style`: with the answer-length covariate)."""
    battles = project_battles(project)
    if not battles:
        return None
    return stats.arena_leaderboard(battles, style=style, n_boot=1000, seed=0)


def runs_comparison(rounds: Any) -> list[dict[str, Any]]:
    """One row per run evaluated: its snapshot, method, beta, learning rate, steps, held-out preference
    share change, and the people's win rate over its base (the newest round)."""
    rows, seen = [], set()
    for round_ in rounds:
        run = round_.run
        if run is None or run.pk in seen:
            continue
        seen.add(run.pk)
        results = round_results(round_)
        rows.append({"run": run, "round": round_, "outcome": run.outcome, "win_rate": results["win_rate"],
                     "judgments": results["judgments"]})  # fmt: skip
    return rows
