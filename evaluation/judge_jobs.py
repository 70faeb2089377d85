"""AI judge runs: create, enqueue, cancel, resume and reap them (the web app's and the command line's
side), and execute one in a worker (`execute`): every pair judged in both orders, verdicts kept chunk by
chunk, so a restarted run judges only the pairs it has not judged yet.

A judge's verdicts are a model annotator's: stored in `JudgeVerdict`, apart from people's `Judgment`s,
so no agreement headline, consensus or workbench ever counts or shows them. Imports the backends (and so
torch) only inside `execute`: the web process never loads them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction

from evaluation import judge_stats
from evaluation.judges import DEFAULT_TEMPLATE, OPTIONS, judge_messages
from evaluation.models import Judge, JudgeVerdict
from generation.registry import EndpointSpec, LocalSpec, UnknownModel, resolve
from labeling import consensus
from labeling.models import Adjudication, Pair, Project
from prefstudio import job_rows, jobs

# Pairs judged per unit of work (twice as many prompts): verdicts are saved, progress written and a
# cancel honoured between two chunks.
CHUNK = 16
LOG_LINES = 40
MAX_TEMPLATE_CHARS = 20_000
PLACEHOLDERS = ("{prompt}", "{first}", "{second}")


# --- human consensus, as the judge is measured against it ----------------------------------------------


def human_labels(project: Project) -> dict[int, str]:
    """Pair id -> the people's consensus label ("a", "b", "tie" or "both_bad") for every pair that has
    one under the project's default rules (majority of at least k counted votes, a lead's adjudication
    overriding; excluded annotators left out; ties and both-bad kept as labels). Gold pairs count with
    their gold answer."""
    from labeling.review import excluded_annotators
    from labeling.snapshots import _vote_counts, rules_for

    rules = rules_for(project, drop_ties=False, drop_both_bad=False, drop_gold=False)
    counts = {row[0]: tuple(row[1:]) for row in _vote_counts(project, excluded_annotators(project))}
    adjudications = dict(Adjudication.objects.filter(pair__project=project).values_list("pair_id", "label"))
    out: dict[int, str] = {}
    gold = dict(Pair.objects.filter(project=project).exclude(gold="").values_list("pk", "gold"))
    for pair_id in set(counts) | set(adjudications):
        votes = [
            label
            for label, n in zip(consensus.LABELS, counts.get(pair_id, (0,) * 4), strict=True)
            for _ in range(n)
        ]
        decision = consensus.decide(votes, rules=rules, adjudication=adjudications.get(pair_id))
        if decision.label is not None:
            out[pair_id] = decision.label
    out.update(gold)
    return out


def pairs_to_judge(judge: Judge) -> list[int]:
    """The ids of the pairs the judge's scope takes, oldest first: all the project's pairs, or only those
    without a human consensus (`human_labels`) when the run started."""
    ids = list(Pair.objects.filter(project_id=judge.project_id).order_by("pk").values_list("pk", flat=True))
    if judge.scope == Judge.Scope.UNSETTLED:
        settled = human_labels(judge.project)
        ids = [pk for pk in ids if pk not in settled]
    return ids


# --- the web app's side ---------------------------------------------------------------------------------


def check_template(template: str) -> str:
    """The judging prompt, checked; ValueError names what is wrong (a missing or unknown placeholder)."""
    template = template.strip()
    if not template:
        raise ValueError("template: empty")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"template: {len(template)} characters; at most {MAX_TEMPLATE_CHARS}")
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"template: needs {', '.join(missing)} (where the request and the two answers go)")
    try:
        judge_messages(prompt="p", first="x", second="y", template=template)
    except KeyError as exc:
        raise ValueError(
            f"template: {{{exc.args[0]}}} is not a placeholder; use {{rubric}}, {{criteria}}, {{prompt}}, "
            "{first}, {second}, and write a literal brace twice ({{ or }})"
        ) from None
    except (IndexError, ValueError) as exc:
        raise ValueError(
            f"template: {exc}; use {{rubric}}, {{criteria}}, {{prompt}}, {{first}}, "
            "{second}, and write a literal brace twice ({{ or }})"
        ) from None
    return template


def judge_create(
    *,
    project: Project,
    user: Any,
    model_ref: str,
    name: str = "",
    template: str = DEFAULT_TEMPLATE,
    scope: str = Judge.Scope.ALL,
    enqueue: bool = True,
    allow_paths: bool = False,
) -> Judge:
    """Record a judge run and (with `enqueue`) put it on the GPU queue once the transaction commits;
    without, it waits queued for `execute` here (the command line). ValueError names the field (a model
    that cannot be called, a bad template, no pairs in scope); prefstudio.jobs.QueueUnavailable, with
    nothing stored, when the queue does not answer."""
    try:
        spec = resolve(model_ref, allow_paths=allow_paths)
    except UnknownModel as exc:
        raise ValueError(f"model: {exc}") from None
    template = check_template(template)
    if scope not in Judge.Scope.values:
        raise ValueError(f"scope: {scope!r} is not one of {', '.join(Judge.Scope.values)}")
    if not Pair.objects.filter(project=project).exists():
        raise ValueError("project: it has no pairs to judge")
    if enqueue and not jobs.queue_available(settings.PREFSTUDIO_TRAINING_QUEUE):
        raise jobs.QueueUnavailable()
    with transaction.atomic():
        judge = Judge.objects.create(
            project=project, created_by=user, name=(name.strip() or spec.label)[:120], model_ref=spec.ref,
            template=template, scope=scope,
        )  # fmt: skip
        if enqueue:
            transaction.on_commit(lambda: judge_enqueue(judge))
    return judge


def judge_enqueue(judge: Judge) -> None:
    """Put the run on the GPU queue; a queue that fails now leaves it queued with a note."""
    job_rows.enqueue(
        Judge, judge, queue=settings.PREFSTUDIO_TRAINING_QUEUE, func="evaluation.tasks.judge_pairs",
        on_failure="evaluation.tasks.judge_failed",
    )  # fmt: skip


def judge_cancel(judge: Judge) -> Judge:
    """Ask the run to stop: a queued one at once, a running one between two chunks of pairs."""
    return job_rows.request_cancel(Judge, judge.pk, queue=settings.PREFSTUDIO_TRAINING_QUEUE)


def judge_resume(judge: Judge) -> Judge:
    """Queue a failed or canceled run again: it judges only the pairs not judged yet."""
    if not jobs.queue_available(settings.PREFSTUDIO_TRAINING_QUEUE):
        raise jobs.QueueUnavailable()
    return job_rows.requeue(Judge, judge.pk, enqueue=judge_enqueue, what="judge runs")


def judges_reap() -> int:
    """Fail running judge runs whose worker went silent (a reaper of prefstudio.jobs); how many."""
    return job_rows.reap_lost(Judge, then="Resume judges only the pairs not judged yet.")


# --- the worker's side ------------------------------------------------------------------------------------


def execute(judge_pk: int, *, worker: str = "", job_id: str = "") -> str:
    """Run the judge with this id to its end; a word on how it ended. A failure is written to the row,
    and the exception re-raised for RQ."""
    from generation.backends.base import GenerationStopped

    outcome = job_rows.run(
        Judge, judge_pk, work=_work, what="The judge", stopped=(GenerationStopped,),
        kept="the verdicts so far are kept", worker=worker, job_id=job_id, lines=LOG_LINES, counts=_counts,
    )  # fmt: skip
    if outcome == "succeeded":  # the queue order may follow this judge's verdicts
        from evaluation.queue_order import rank_project

        rank_project(Judge.objects.select_related("project").get(pk=judge_pk).project)
    return outcome


def _work(judge: Judge, log: job_rows.LogTail) -> dict[str, int]:
    """Judge every pair in scope that has no verdict yet; the counts the row ends with."""
    _judge_all(judge, log)
    counts = _counts(judge)
    log(f"Done: {counts['done']} pairs judged in both orders, {counts['inconsistent']} "
        f"position-inconsistent, {counts['unparseable']} unparseable.")  # fmt: skip
    return counts


def _counts(judge: Judge) -> dict[str, int]:
    verdicts = JudgeVerdict.objects.filter(judge=judge)
    return {
        "done": verdicts.count(),
        "unparseable": verdicts.filter(label="").count(),
        "inconsistent": verdicts.filter(inconsistent=True).count(),
    }


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _judge_all(judge: Judge, log: job_rows.LogTail) -> None:
    project = judge.project
    ids = pairs_to_judge(judge)
    judged = set(JudgeVerdict.objects.filter(judge=judge).values_list("pair_id", flat=True))
    todo = [pk for pk in ids if pk not in judged]
    total, done = len(ids), len(ids) - len(todo)
    Judge.objects.filter(pk=judge.pk).update(total=total, done=done)
    if done:
        log(f"{done} of {total} pairs were already judged; judging the rest.")
    if not todo:
        return
    spec = resolve(judge.model_ref, allow_paths=True)  # checked when the run was made
    backend, adapter = _backend(spec, log)
    log(f"{spec.label}: {len(todo)} pairs, each in both orders.")
    context = {"rubric": project.rubric, "criteria": project.criteria or [], "template": judge.template}
    started, fresh = time.monotonic(), 0
    try:
        for chunk in _chunks(todo, CHUNK):
            shown = (
                Pair.objects.filter(pk__in=chunk).order_by("pk").only("prompt", "response_a", "response_b")
            )
            pairs = list(shown)
            prompts = [judge_messages(prompt=p.prompt, first=p.response_a, second=p.response_b, **context)
                       for p in pairs]  # fmt: skip
            prompts += [judge_messages(prompt=p.prompt, first=p.response_b, second=p.response_a, **context)
                        for p in pairs]  # fmt: skip
            rows, methods, answers = _probabilities(backend, spec, adapter, prompts, judge)
            _save(judge, pairs, rows, methods, answers)
            done += len(pairs)
            fresh += len(pairs)
            elapsed = max(time.monotonic() - started, 1e-6)
            Judge.objects.filter(pk=judge.pk).update(
                done=done, pairs_per_second=fresh / elapsed, eta_seconds=(total - done) * elapsed / fresh
            )
    finally:
        if isinstance(spec, EndpointSpec):
            backend.close()


def _backend(spec: Any, log: job_rows.LogTail) -> tuple[Any, str | None]:
    if isinstance(spec, EndpointSpec):
        from generation.backends.endpoint import EndpointBackend

        return EndpointBackend(spec.base_url, spec.model, api_key=spec.api_key()), None
    from generation.backends.local import LocalBackend

    assert isinstance(spec, LocalSpec)
    log(f"Loading {spec.base_path}.")
    backend = LocalBackend(spec.base_path)
    if spec.adapter_name:
        backend.load_adapter(spec.adapter_name, spec.local_adapter())
    return backend, spec.adapter_name


def _probabilities(
    backend: Any, spec: Any, adapter: str | None, prompts: list[Any], judge: Judge
) -> tuple[Any, list[str], list[str]]:
    """(probabilities (2N, 3) with NaN rows for answers that could not be read, how each row was read,
    the text of each unreadable answer)."""
    stop = lambda: job_rows.cancel_requested(Judge, judge.pk)  # noqa: E731
    if isinstance(spec, EndpointSpec):
        readings = backend.choice_probabilities_detailed(prompts, list(OPTIONS), should_stop=stop)
        return readings.probabilities, list(readings.methods), list(readings.texts)
    kwargs = {"adapter": adapter} if adapter else {}
    rows = backend.choice_probabilities(prompts, list(OPTIONS), should_stop=stop, **kwargs)
    return rows, [JudgeVerdict.Method.PROBABILITIES] * len(prompts), [""] * len(prompts)


def _finite(row: Any) -> list[float] | None:
    values = [float(x) for x in row]
    return values if all(math.isfinite(x) for x in values) else None


def _save(judge: Judge, pairs: list[Pair], rows: Any, methods: list[str], answers: list[str]) -> None:
    """One verdict per pair from its two orders' rows (the pair as written, then swapped)."""
    n = len(pairs)
    verdicts = []
    for i, pair in enumerate(pairs):
        shown, swapped = _finite(rows[i]), _finite(rows[n + i])
        verdict = JudgeVerdict(judge=judge, pair=pair, shown=shown, swapped=swapped)
        if shown is None or swapped is None:
            verdict.method = JudgeVerdict.Method.UNPARSEABLE
            verdict.answer = "\n".join(a for a in (answers[i], answers[n + i]) if a)[:2000]
        else:
            averaged = judge_stats.order_averaged([shown], [swapped])[0]
            verdict.p_a, verdict.p_b, verdict.p_tie = (float(x) for x in averaged)
            best = int(averaged.argmax())
            verdict.label, verdict.probability = judge_stats.LABELS[best], float(averaged[best])
            verdict.inconsistent = bool(judge_stats.position_inconsistent([shown], [swapped])[0])
            both = {methods[i], methods[n + i]}
            verdict.method = JudgeVerdict.Method.PARSED if JudgeVerdict.Method.PARSED in both else methods[i]
        verdicts.append(verdict)
    JudgeVerdict.objects.bulk_create(verdicts, ignore_conflicts=True)
