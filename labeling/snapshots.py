"""Exports: the live preview of what the consensus rules keep, and immutable snapshots written from the
database in a stream (server-side cursors), so memory does not grow with the number of pairs.

The rules (labeling/consensus.py) and the file formats (labeling/exporting.py) are pure; this module
feeds them from the database and records the snapshot.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import django_rq
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Func,
    IntegerField,
    Max,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.db.models.lookups import Exact
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Callback, Job, JobStatus

from labeling import consensus, exporting
from labeling.conversations import MESSAGES_MARK
from labeling.models import ExportSnapshot, Judgment, Pair, Project
from labeling.review import dawid_skene_posteriors, excluded_annotators
from prefstudio import jobs, storage

logger = logging.getLogger(__name__)

CHUNK = 2000  # rows per fetch from the server-side cursors
PROGRESS_EVERY = 5000  # pairs between progress writes
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class JudgeFill:
    """An export's rule letting an AI judge fill the pairs people left without a consensus: the judge
    (evaluation.models.Judge) and its name, the probability its label needs, and the bar it cleared
    when the export was made (kappa with people at least `min_kappa` on at least `min_shared` pairs;
    `kappa` and `shared` as measured then). Stored on the snapshot as `judge_fill`."""

    judge_id: int
    name: str
    min_probability: float
    min_kappa: float
    min_shared: int
    kappa: float
    shared: int

    def labels(self) -> dict[int, tuple[str, float]]:
        """Pair id -> (label, probability) of the judge's readable verdicts."""
        from django.apps import apps

        verdicts = apps.get_model("evaluation", "JudgeVerdict").objects.filter(judge_id=self.judge_id)
        rows = verdicts.exclude(label="").values_list("pair_id", "label", "probability")
        return {pair_id: (label, probability) for pair_id, label, probability in rows.iterator()}


LABELS = consensus.LABELS
CRITERION_LABELS = ("a", "b", "tie")


class SnapshotInUse(Exception):
    """The snapshot cannot be deleted: training runs were trained on it."""


def _not_flat() -> Q:
    """Pairs whose prompt cannot be a plain string (exporting.is_flat_prompt), in SQL: a chat prompt
    with a second message, or whose one message is not the user's."""
    return Q(prompt__1__isnull=False) | (Q(prompt__0__role__isnull=False) & ~Q(prompt__0__role="user"))


def _several_messages() -> Q:
    """Pairs with a response of several messages (labeling.conversations marks them), in SQL."""
    return Q(response_a__startswith=MESSAGES_MARK) | Q(response_b__startswith=MESSAGES_MARK)


def _tool_messages() -> Q:
    """Pairs whose messages carry tool calls, tool call ids or names, in SQL (on the JSON as text):
    the keys that chat data carries beside role and content (exporting.has_extra_keys checks any key)."""
    # Only a list of messages can carry them in a prompt: the cheap test first spares most rows the cast.
    in_prompt = Q(prompt__0__isnull=False) & (
        Q(prompt_text__contains='"tool_call') | Q(prompt_text__contains='"name"')
    )
    return in_prompt | (
        _several_messages() & (Q(response_a__contains='"tool_call') | Q(response_b__contains='"tool_call')
                               | Q(response_a__contains='"name"') | Q(response_b__contains='"name"'))
    )  # fmt: skip


def _flag(condition: Q) -> Case:
    return Case(When(condition, then=Value(True)), default=Value(False), output_field=BooleanField())


class _Bytes(Func):
    """The size of a text in bytes, UTF-8 (LENGTH counts characters). SQLite has no OCTET_LENGTH before
    3.43: the length of the text as a blob is its size."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra)


def _counted(excluded: frozenset[int], prefix: str = "") -> Q:
    """The judgments that count: those of annotators not excluded (`prefix`: the path to Judgment)."""
    return ~Q(**{f"{prefix}annotator_id__in": excluded}) if excluded else Q()


def _vote_counts(
    project: Project, excluded: frozenset[int], *, criteria: list[str] = (), pairs: list[int] | None = None
) -> Any:
    """Counted votes per pair (excluded annotators left out), ordered by pair id, as tuples: the pair id,
    one count per label of LABELS, then per criterion one count per label of CRITERION_LABELS. `pairs`:
    only these pairs' (all the project's when None)."""
    judgments = Judgment.objects.filter(_counted(excluded), pair__project=project)
    if pairs is not None:
        judgments = judgments.filter(pair_id__in=pairs)
    counts = {label: Count("id", filter=Q(choice=label)) for label in LABELS}
    for i, name in enumerate(criteria):
        answer = KeyTextTransform(name, "criteria")  # any criterion name, "__" included
        for label in CRITERION_LABELS:
            counts[f"c{i}_{label}"] = Count("id", filter=Exact(answer, Value(label)))
    return judgments.order_by("pair_id").values("pair_id").annotate(**counts).values_list("pair_id", *counts)


@dataclass(frozen=True)
class SampleRow:
    """One row of the preview: `row` as the file holds it (keys in file order), `text` the same as JSON
    for reading (exporting.row_text), and the counted votes and adjudication of its pair."""

    row: dict[str, Any]
    text: str
    votes: dict[str, int]
    label: str | None
    adjudicated: bool

    @property
    def chips(self) -> list[tuple[str, int]]:
        """(label, votes) for each label that has votes, in LABELS order."""
        return [(label, n) for label, n in self.votes.items() if n]


@dataclass(frozen=True)
class RowSizes:
    """About how large the rows are as JSON lines, in bytes: the mean and the largest, and the mean part
    of a row that is the pair's metadata (0 when the export leaves it out). Estimated from the sizes of
    the texts in the database (JSON escapes not counted), without reading them."""

    mean: float
    largest: int
    metadata_mean: float


@dataclass(frozen=True)
class Preview:
    """What the rules would export now: pairs looked at, kept (giving rows in the shape), dropped by
    reason, the first SAMPLE_ROWS rows (`samples` as the file holds them, `sample_rows` with their
    votes), the measured disagreement, the judgments counted and how large the rows are (None when
    no pair is kept)."""

    shape: str
    pairs: int
    kept: int
    dropped: dict[str, int]
    samples: list[dict[str, Any]]
    sample_rows: list[SampleRow]
    disagreement: consensus.Disagreement
    label_noise: float | None
    suggested_label_smoothing: float
    judgments: int
    row_sizes: RowSizes | None
    judge_rows: int = 0  # kept pairs an AI judge labelled (JudgeFill)

    @property
    def dropped_total(self) -> int:
        return self.pairs - self.kept

    @property
    def dropped_rows(self) -> list[tuple[str, str, int]]:
        """(code, words, count) per reason, largest first."""
        return dropped_in_words(self.dropped)


def dropped_in_words(dropped: dict[str, int]) -> list[tuple[str, str, int]]:
    """Dropped pairs by reason as (code, words, count), largest first: what pages and the command show."""
    return sorted(
        ((code, consensus.REASONS.get(code, code), n) for code, n in dropped.items()), key=lambda row: -row[2]
    )


def rules_in_words(snapshot: ExportSnapshot) -> list[tuple[str, str]]:
    """The rules a snapshot was made with, as (name, value) in words, the minimum share as written."""
    rules = consensus.ConsensusRules(**snapshot.rules)
    if rules.method == "majority":
        method = "Majority vote"
        threshold = ("Minimum share", snapshot.min_share_text or consensus.share_text(rules.min_share))
    else:
        method = "Dawid–Skene posterior"
        threshold = ("Minimum posterior", consensus.share_text(rules.min_posterior))
    words = [
        ("Method", method),
        ("Minimum judgments", str(rules.min_judgments)),
        threshold,
        ("Ties", "dropped" if rules.drop_ties else "kept"),
        ("Both-bad pairs", "dropped" if rules.drop_both_bad else "kept"),
        ("A lead's final label", "overrides the votes" if rules.adjudication_overrides else "ignored"),
        ("Gold pairs", "left out" if rules.drop_gold else "included"),
    ]
    if snapshot.shape != exporting.HOSTED:
        words.append(("Pair metadata in meta", "included" if snapshot.include_metadata else "left out"))
    words.append(("Unsettled pairs", judge_fill_in_words(snapshot.judge_fill)))
    return words


def judge_fill_in_words(fill: dict[str, Any] | None) -> str:
    """How an export's unsettled pairs were treated, in words (`JudgeFill` as stored, or None)."""
    if not fill:
        return "left out (people only)"
    return (
        f"filled by the AI judge “{fill['name']}” where its probability is at least "
        f"{fill['min_probability']:g} (its κ with people {fill['kappa']:.2f} on {fill['shared']} pairs; "
        f"the rule asked for at least {fill['min_kappa']:g} on {fill['min_shared']})"
    )


def rules_for(project: Project, **values: Any) -> consensus.ConsensusRules:
    """The project's default rules (min_judgments = its k), with `values` overriding them."""
    return consensus.ConsensusRules(**{"min_judgments": project.overlap, **values})


def _vote_list(counts: tuple[int, ...]) -> list[str]:
    return [label for label, n in zip(LABELS, counts, strict=True) for _ in range(n)]


def _decider(
    project: Project, rules: consensus.ConsensusRules, fill: JudgeFill | None = None
) -> Callable[[int, tuple[int, ...], str | None, bool], consensus.Decision]:
    """`consensus.decide` for one pair from (pair id, vote counts in LABELS order, adjudication, gold).
    Under majority the decision depends only on the last three, so equal inputs share one Decision, as
    in `consensus.decide_all`: a project has few distinct combinations, and a million pairs few calls.
    With `fill`, a pair people left unsettled takes the judge's label where `consensus.judge_filled`
    allows it."""
    decide = _people_decider(project, rules)
    if fill is None:
        return decide
    labels = fill.labels()

    def filled(pair_id: int, counts: tuple[int, ...], adjudication: str | None, gold: bool):
        decision = decide(pair_id, counts, adjudication, gold)
        verdict = labels.get(pair_id) if decision.reason in consensus.UNSETTLED else None
        if verdict is None:
            return decision
        return consensus.judge_filled(
            decision, label=verdict[0], probability=verdict[1], min_probability=fill.min_probability,
            rules=rules,
        )  # fmt: skip

    return filled


def _people_decider(
    project: Project, rules: consensus.ConsensusRules
) -> Callable[[int, tuple[int, ...], str | None, bool], consensus.Decision]:
    if rules.method == "dawid-skene":
        posteriors = dawid_skene_posteriors(project)

        def by_posterior(pair_id: int, counts: tuple[int, ...], adjudication: str | None, gold: bool):
            return consensus.decide(
                _vote_list(counts), rules=rules, adjudication=adjudication, is_gold=gold,
                posterior=posteriors.get(pair_id) or {},
            )  # fmt: skip

        return by_posterior

    @functools.cache
    def by_votes(counts: tuple[int, ...], adjudication: str | None, gold: bool) -> consensus.Decision:
        return consensus.decide(_vote_list(counts), rules=rules, adjudication=adjudication, is_gold=gold)

    return lambda pair_id, counts, adjudication, gold: by_votes(counts, adjudication, gold)


@dataclass(frozen=True)
class _Shape:
    """What decides whether a kept pair fits a shape and format (exporting.drop_reason)."""

    flat_prompt: bool
    plain_responses: bool
    extra_keys: bool


def _decisions(
    project: Project,
    rules: consensus.ConsensusRules,
    excluded: frozenset[int],
    *,
    include_metadata: bool,
    fill: JudgeFill | None = None,
) -> tuple[list[int], list[consensus.Decision], list[_Shape], list[tuple[int, ...]], int]:
    """(pair ids, decisions, what their texts are like, their sizes, judgments counted) for every pair of
    the project. Sizes, in bytes: (prompt as JSON, response A, response B, id and model names, metadata as
    JSON or 0 without `include_metadata`).

    Two narrow queries merged in id order, as the export merges its wide rows (`_streamed_pairs`): the
    pairs with what their texts are like, and the counted votes grouped by pair. Joining judgments to
    pairs instead would look at each pair's texts once per judgment. Under majority, equal inputs give
    the very same Decision and `_Shape` objects, so callers may count them by identity.
    """
    pairs = (
        training_pairs(project)
        .order_by("id")
        .alias(prompt_text=Cast("prompt", TextField()))
        .annotate(
            not_flat=_flag(_not_flat()), several=_flag(_several_messages()), tools=_flag(_tool_messages()),
            prompt_bytes=_Bytes("prompt_text"), a_bytes=_Bytes("response_a"), b_bytes=_Bytes("response_b"),
            names_bytes=_Bytes("external_id") + _Bytes("model_a") + _Bytes("model_b"),
            metadata_bytes=_Bytes(Cast("metadata", TextField())) if include_metadata else Value(0),
        )
        .values_list("id", "gold", "adjudication__label", "not_flat", "several", "tools", "prompt_bytes",
                     "a_bytes", "b_bytes", "names_bytes", "metadata_bytes", "external_id")
    )  # fmt: skip
    decide = _decider(project, rules, fill)
    no_votes = (0,) * len(LABELS)
    shape_of = functools.cache(_Shape)
    ids, decisions, shapes, sizes, judgments = [], [], [], [], 0
    pair_rows, vote_rows = _both(pairs, _vote_counts(project, excluded))
    votes = iter(vote_rows)
    row = next(votes, None)
    for pair_id, gold, adjudication, not_flat, several, tools, *size, external_id in pair_rows:
        while row is not None and row[0] < pair_id:
            row = next(votes, None)
        counts = tuple(row[1:]) if row is not None and row[0] == pair_id else no_votes
        judgments += sum(counts)
        ids.append(pair_id)
        decisions.append(decide(pair_id, counts, adjudication, bool(gold)))
        shapes.append(shape_of(not not_flat, not several, bool(tools)))
        if not external_id:  # exported as pair-<pk>
            size[3] += len(exporting.pair_id(external_id="", pk=pair_id))
        sizes.append(size)
    return ids, decisions, shapes, sizes, judgments


def _row_sizes(
    shape: str, include_metadata: bool, skeleton: list[str], sizes: list[tuple[int, ...]]
) -> RowSizes | None:
    """About how large the rows of pairs of these `sizes` (`_decisions`) are: the lines of a pair whose
    texts are all empty (`skeleton`) plus the sizes of its texts, less the empty texts' quotes and "{}"."""
    if not sizes:
        return None
    base = max(len(line.encode()) for line in skeleton) + 1  # the line break
    hosted, unpaired = shape == exporting.HOSTED, shape in ("unpaired", "unpaired-conversational")
    rows = total = largest = metadata_total = 0
    for prompt, a, b, names, metadata in sizes:
        common = base + prompt - 2 + (0 if hosted else names)
        if include_metadata and not hosted:
            metadata = max(metadata - 2, 0)
            common += metadata
        else:
            metadata = 0
        if unpaired:
            rows += 2
            total += 2 * common + a + b
            largest = max(largest, common + max(a, b))
            metadata_total += 2 * metadata
        else:
            rows += 1
            total += common + a + b
            largest = max(largest, common + a + b)
            metadata_total += metadata
    return RowSizes(mean=total / rows, largest=largest, metadata_mean=metadata_total / rows)


def export_preview(
    project: Project,
    *,
    rules: consensus.ConsensusRules,
    shape: str,
    fmt: str = "jsonl",
    include_metadata: bool = True,
    fill: JudgeFill | None = None,
) -> Preview:
    """Counts of what `rules` (and an AI judge's `fill`) keep and drop in `shape` and `fmt`, with the
    first kept rows as samples and how large the rows are."""
    excluded = excluded_annotators(project)
    ids, decisions, shapes, sizes, judgments = _decisions(
        project, rules, excluded, include_metadata=include_metadata and shape != exporting.HOSTED, fill=fill
    )

    @functools.cache
    def reason_for(decision_id: int, texts_id: int) -> str | None:
        texts = by_identity[texts_id]
        return exporting.drop_reason(
            by_identity[decision_id], shape=shape, flat_prompt=texts.flat_prompt,
            plain_responses=texts.plain_responses, extra_keys=texts.extra_keys, fmt=fmt,
        )  # fmt: skip

    # Few distinct objects among many pairs (see `_decisions`): each distinct one is looked at once.
    by_identity: dict[int, Any] = {id(d): d for d in decisions}
    by_identity.update((id(t), t) for t in shapes)
    dropped: dict[str, int] = {}
    if evaluation := evaluation_pairs(project).count():
        dropped["evaluation"] = evaluation
    kept_ids, kept_sizes, judge_rows = [], [], 0
    for pair_id, decision, texts, size in zip(ids, decisions, shapes, sizes, strict=True):
        reason = reason_for(id(decision), id(texts))
        if reason is None:
            kept_ids.append(pair_id)
            kept_sizes.append(size)
            judge_rows += decision.judge_probability is not None
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    by_id = dict(zip(ids, decisions, strict=True))
    criteria = [c["name"] for c in project.criteria or []]
    shown = kept_ids[:SAMPLE_ROWS]
    counts = {row[0]: row[1:] for row in _vote_counts(project, excluded, criteria=criteria, pairs=shown)}
    sample_rows: list[SampleRow] = []
    judge_name = fill.name if fill is not None else None
    for row in _exported(Pair.objects.filter(pk__in=shown).order_by("id"), include_metadata=include_metadata):
        decision = by_id[row[0]]
        export_pair = _export_pair(row, _criteria_counts(counts.get(row[0]), criteria))
        for built in exporting.build_rows(
            export_pair, decision, shape=shape, include_metadata=include_metadata, judge=judge_name
        ):
            text = exporting.row_text(built)
            sample_rows.append(SampleRow(built, text, decision.votes, decision.label, decision.adjudicated))
    skeleton = []
    if kept_ids:
        empty = exporting.ExportPair(
            id="", pair_pk=kept_ids[0], prompt="", response_a="", response_b="",
            criteria=_criteria_counts(None, criteria),
        )  # fmt: skip
        skeleton = exporting.encode_rows(
            empty, by_id[kept_ids[0]], shape=shape, include_metadata=include_metadata, judge=judge_name
        )
    counter = consensus.DisagreementCounter()
    for decision_id, times in Counter(map(id, decisions)).items():
        if by_identity[decision_id].judge_probability is None:  # the noise measured is people's
            counter.add(by_identity[decision_id], times=times)
    disagreement = counter.result()
    noise = _label_noise(project, ids, decisions) if rules.method == "dawid-skene" else None
    return Preview(
        shape=shape,
        pairs=len(ids),
        kept=len(kept_ids),
        dropped=dropped,
        samples=[sample.row for sample in sample_rows[:SAMPLE_ROWS]],
        sample_rows=sample_rows[:SAMPLE_ROWS],
        disagreement=disagreement,
        label_noise=noise if noise is not None else disagreement.label_noise,
        suggested_label_smoothing=consensus.suggest_label_smoothing(
            noise=noise if noise is not None else disagreement.label_noise
        ),
        judgments=judgments,
        row_sizes=_row_sizes(shape, include_metadata, skeleton, kept_sizes),
        judge_rows=judge_rows,
    )


def _label_noise(project: Project, ids: list[int], decisions: list[consensus.Decision]) -> float | None:
    """Dawid–Skene's estimate: the mean, over kept A/B pairs, of 1 minus the posterior of their label."""
    posterior = dawid_skene_posteriors(project)
    misses = [
        1.0 - (posterior.get(pair_id) or {}).get(d.label, 0.0)
        for pair_id, d in zip(ids, decisions, strict=True)
        if d.kept and d.chosen is not None and not d.adjudicated
    ]
    kept = sum(1 for d in decisions if d.kept and d.chosen is not None)
    return sum(misses) / kept if kept else None


# The columns of a pair the export reads, in the order `_export_pair` takes them.
_EXPORTED = ("id", "external_id", "prompt", "response_a", "response_b", "model_a", "model_b", "metadata_json")


def _exported(pairs: QuerySet[Pair], *more: str, include_metadata: bool = True) -> QuerySet:
    """Rows of `_EXPORTED` (then `more`) columns. The metadata comes as the database's JSON text, which
    JSONL files hold as it is (exporting.ExportPair), saving a decode and an encode per pair; "{}" when
    the export leaves it out (it is not read)."""
    metadata = Cast("metadata", TextField()) if include_metadata else Value("{}", output_field=TextField())
    return pairs.annotate(metadata_json=metadata).values_list(*_EXPORTED, *more)


def _export_pair(row: tuple[Any, ...], criteria: dict[str, dict[str, int]]) -> exporting.ExportPair:
    pk, external_id, prompt, response_a, response_b, model_a, model_b, metadata = row
    return exporting.ExportPair(
        id=exporting.pair_id(external_id=external_id, pk=pk),
        pair_pk=pk,
        prompt=prompt,
        response_a=response_a,
        response_b=response_b,
        model_a=model_a,
        model_b=model_b,
        criteria=criteria,
        metadata=metadata,
    )


def snapshot_start(
    *,
    project: Project,
    user: Any,
    rules: consensus.ConsensusRules,
    shape: str,
    fmt: str,
    eval_fraction: float,
    include_metadata: bool = True,
    min_share_text: str = "",
    in_worker: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    fill: JudgeFill | None = None,
) -> ExportSnapshot:
    """Record a snapshot and build it: here, or in a worker (queue `default`) while its page shows the
    progress. `include_metadata`: whether rows carry each pair's metadata in `meta`; `min_share_text`:
    the minimum share as the user wrote it ("2/3"), shown with the rules. `fill`: an AI judge may label
    the pairs people left unsettled (the default is people only). `in_worker` None: in a worker
    for more than PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS pairs. A failed build is recorded on the snapshot
    (state, message), not raised. Raises ValueError for a bad shape, format or fraction (the message
    names it), and prefstudio.jobs.QueueUnavailable, with nothing stored, when a worker's export cannot
    be queued."""
    if shape not in ExportSnapshot.Shape.values:
        raise ValueError(f"shape: {shape!r} is not one of {', '.join(ExportSnapshot.Shape.values)}")
    if fmt not in ExportSnapshot.Format.values:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(ExportSnapshot.Format.values)}")
    exporting.split_of("x", eval_fraction)  # validates the fraction
    pairs = training_pairs(project).count()
    if in_worker is None:
        in_worker = pairs > settings.PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS
    if in_worker and not jobs.queue_available():
        raise jobs.QueueUnavailable()
    snapshot = ExportSnapshot.objects.create(
        project=project, created_by=user, rules=asdict(rules), shape=shape, format=fmt,
        eval_fraction=eval_fraction, pairs_total=pairs, include_metadata=include_metadata,
        min_share_text=min_share_text.strip(), judge_fill=asdict(fill) if fill is not None else None,
    )  # fmt: skip
    if not in_worker:
        with contextlib.suppress(Exception):  # recorded on the snapshot, which the caller shows
            snapshot_build(snapshot, progress=progress)
        snapshot.refresh_from_db()
        return snapshot
    # The id is chosen and saved first: inside a transaction django-rq enqueues on commit and returns
    # no job.
    job_id = str(uuid.uuid4())
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(job_id=job_id)
    try:
        jobs.enqueue(
            "default",
            "labeling.tasks.export_snapshot",
            snapshot.pk,
            job_id=job_id,
            job_timeout=6 * 3600,
            on_failure=Callback("labeling.tasks.export_job_failed"),
        )
    except jobs.QueueUnavailable:
        snapshot.delete()  # nothing was written; the user is told to try again
        raise
    snapshot.refresh_from_db()
    return snapshot


def snapshot_fail(snapshot: ExportSnapshot, message: str) -> None:
    ExportSnapshot.objects.filter(pk=snapshot.pk).exclude(state=ExportSnapshot.State.DONE).update(
        state=ExportSnapshot.State.FAILED, message=message, finished_at=timezone.now()
    )
    _remove_files(snapshot)


def snapshot_check(snapshot: ExportSnapshot) -> None:
    """Fail a queued or running snapshot whose job is gone or died without reaching its own error
    handling (a killed worker): otherwise its page would poll for ever. Redis out of reach: no change."""
    if snapshot.finished or not snapshot.job_id:
        return
    try:
        job = Job.fetch(snapshot.job_id, connection=django_rq.get_connection("default"))
        status = job.get_status()
    except NoSuchJobError:
        snapshot_fail(
            snapshot, "The export job disappeared from the queue (Redis was flushed?). Export again."
        )
    except redis.RedisError:
        return
    else:
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            snapshot_fail(snapshot, jobs.reason_from_exc_info(job.exc_info or "", what="The export"))
    snapshot.refresh_from_db()


def training_pairs(project: Project) -> QuerySet[Pair]:
    """The pairs an export may hold: every pair of the project but the blind evaluation pairs (of
    batches marked `evaluation`), which no export rule lets through."""
    return Pair.objects.filter(project=project).exclude(batch__evaluation=True)


def evaluation_pairs(project: Project) -> QuerySet[Pair]:
    """The project's blind evaluation pairs, which exports leave out (and count)."""
    return Pair.objects.filter(project=project, batch__evaluation=True)


def _streamed_pairs(
    project: Project, excluded: frozenset[int], criteria: list[str], *, include_metadata: bool
) -> Iterator[tuple[tuple[Any, ...], str, str | None, tuple[int, ...] | None]]:
    """Every pair of the project in id order, as (the `_EXPORTED` columns, gold, adjudication label, its
    counted vote counts: `_vote_counts` less the pair id, None without any): two server-side cursors
    merged, so only a chunk of each is in memory."""
    pairs = _raw_rows(
        _exported(
            training_pairs(project).order_by("id"), "gold", "adjudication__label",
            include_metadata=include_metadata,
        )
    )  # fmt: skip
    votes = _raw_rows(_vote_counts(project, excluded, criteria=criteria))
    row = next(votes, None)
    for pk, external_id, prompt, *texts, gold, adjudication in pairs:
        while row is not None and row[0] < pk:
            row = next(votes, None)
        counts = row[1:] if row is not None and row[0] == pk else None
        yield (pk, external_id, json.loads(prompt), *texts), gold, adjudication, counts


def _both(first: QuerySet, second: QuerySet) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of two narrow queries (`_raw_rows` in one fetch each). Outside a transaction the second
    runs at the same time on a connection of its own, so the database works on both at once (about
    half of the export preview's time); inside one, both run on it in turn and see the same data."""
    if connection.in_atomic_block:
        return list(_raw_rows(first, chunked=False)), list(_raw_rows(second, chunked=False))

    def on_own_connection() -> list[tuple[Any, ...]]:
        try:
            return list(_raw_rows(second, chunked=False))
        finally:
            connection.close()  # this thread's connection

    with ThreadPoolExecutor(1) as other:
        later = other.submit(on_own_connection)
        rows = list(_raw_rows(first, chunked=False))
        return rows, later.result()


def _raw_rows(rows: QuerySet, *, chunked: bool = True) -> Iterator[tuple[Any, ...]]:
    """The rows of a `values_list` query as the database driver returns them, without Django's per-value
    converters (JSON comes as its text, which the caller decodes where it must): they took a tenth of a
    large export's time. `chunked`: CHUNK rows at a time from a server-side cursor, as `iterator()` reads
    them, for wide rows; otherwise in one fetch, for narrow rows, where the cursor's round trips cost
    more than the rows' memory."""
    sql, params = rows.query.sql_with_params()
    if not chunked:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            fetched = cursor.fetchall()
        yield from fetched
        return
    # One thread reads the next chunk while the caller works on this one: the database's share of the
    # work (about a third of a million-pair export, measured) overlaps with ours instead of adding to it.
    with connection.chunked_cursor() as cursor, ThreadPoolExecutor(1) as reader:
        cursor.execute(sql, params)
        upcoming = reader.submit(cursor.fetchmany, CHUNK)
        while chunk := upcoming.result():
            upcoming = reader.submit(cursor.fetchmany, CHUNK)
            yield from chunk


def _criteria_counts(counts: tuple[int, ...] | None, criteria: list[str]) -> dict[str, dict[str, int]]:
    """Criterion -> label -> counted votes; zeros for a pair without votes, so every row has the same keys."""
    if counts is None:
        return {name: dict.fromkeys(CRITERION_LABELS, 0) for name in criteria}
    n, k = len(LABELS), len(CRITERION_LABELS)
    return {
        name: dict(zip(CRITERION_LABELS, counts[n + i * k : n + (i + 1) * k], strict=True))
        for i, name in enumerate(criteria)
    }


def snapshot_build(
    snapshot: ExportSnapshot, *, progress: Callable[[int, int], None] | None = None, rerun: bool = False
) -> None:
    """Write the snapshot's files and record what they hold. Runs once: a snapshot that is not queued
    is left alone (with `rerun`, a running one is taken again: the job machinery's retry after a lost
    database connection, which starts its files afresh). Any error fails it with the reason and removes
    its partial files."""
    states = [ExportSnapshot.State.QUEUED] + ([ExportSnapshot.State.RUNNING] if rerun else [])
    claimed = ExportSnapshot.objects.filter(pk=snapshot.pk, state__in=states).update(
        state=ExportSnapshot.State.RUNNING
    )
    if not claimed:
        return
    directory = _staging(snapshot)
    if rerun:
        _remove_files(snapshot)
    try:
        _write(snapshot, directory, progress)
    except Exception as exc:
        if jobs.will_retry(exc):  # the job runs again on a fresh connection and starts its files afresh
            raise
        logger.exception("export %s failed", snapshot.uuid)
        snapshot_fail(snapshot, jobs.failure_reason(exc, what="The export"))
        raise


def _write(snapshot: ExportSnapshot, directory: Path, progress: Callable[[int, int], None] | None) -> None:
    project = snapshot.project
    rules = consensus.ConsensusRules(**snapshot.rules)
    excluded = excluded_annotators(project)
    criteria = [c["name"] for c in project.criteria or []]
    # The noise estimate follows the method, as the preview's does; a majority export fits no model.
    dawid_skene = rules.method == "dawid-skene"
    posterior = dawid_skene_posteriors(project) if dawid_skene else None
    fill = JudgeFill(**snapshot.judge_fill) if snapshot.judge_fill else None
    decide = _decider(project, rules, fill)
    no_votes = (0,) * len(LABELS)
    newest = Judgment.objects.filter(pair__project=project).exclude(annotator_id__in=excluded)
    last_judgment = newest.aggregate(last=Max("created_at"))["last"]
    evaluation = evaluation_pairs(project).count()
    directory.mkdir(parents=True, exist_ok=False)
    done = judgments = judge_rows = 0
    counter = consensus.DisagreementCounter()  # a few histogram cells, however many pairs
    noise_sum = 0.0
    include_metadata = snapshot.include_metadata and snapshot.shape != exporting.HOSTED
    writer = exporting.SnapshotWriter(
        directory, fmt=snapshot.format, shape=snapshot.shape, eval_fraction=snapshot.eval_fraction,
        include_metadata=include_metadata, judge=fill.name if fill is not None else None,
    )  # fmt: skip
    with transaction.atomic(), writer:  # one transaction: the two cursors see the same data
        for pair, gold, adjudication, counts in _streamed_pairs(
            project, excluded, criteria, include_metadata=include_metadata
        ):
            votes = counts[: len(LABELS)] if counts is not None else no_votes
            judgments += sum(votes)
            decision = decide(pair[0], votes, adjudication, bool(gold))
            if decision.judge_probability is None:  # the noise measured is people's
                counter.add(decision)
            written = writer.add(_export_pair(pair, _criteria_counts(counts, criteria)), decision) is None
            judge_rows += written and decision.judge_probability is not None
            # Over the pairs the rules keep, as the counter's denominator (a shape may write fewer).
            if dawid_skene and decision.kept and decision.chosen is not None and not decision.adjudicated:
                noise_sum += 1.0 - (posterior.get(pair[0]) or {}).get(decision.label, 0.0)
            done += 1
            if done % PROGRESS_EVERY == 0:
                ExportSnapshot.objects.filter(pk=snapshot.pk).update(pairs_done=done)
                if progress is not None:
                    progress(done, snapshot.pairs_total)
        files = writer.close()
    _publish(snapshot, directory, [info.name for info in files])
    disagreement = counter.result()
    measured = disagreement.pairs > 0
    noise = noise_sum / disagreement.pairs if measured and dawid_skene else disagreement.label_noise
    by_split = {info.split: info.rows for info in files}
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(
        state=ExportSnapshot.State.DONE,
        finished_at=timezone.now(),
        pairs_done=done,
        kept=writer.kept,
        dropped={**writer.dropped, **({"evaluation": evaluation} if evaluation else {})},
        train_rows=by_split.get("train", 0),
        eval_rows=by_split.get("eval", 0),
        files=[asdict(info) for info in files],
        judgments=judgments,
        judge_rows=judge_rows,
        last_judgment_at=last_judgment,
        excluded_annotators=sorted(excluded),
        disagreement=disagreement.non_unanimous,
        label_noise=noise if measured else None,
        suggested_label_smoothing=consensus.suggest_label_smoothing(noise=noise) if measured else None,
    )


def snapshot_delete(snapshot: ExportSnapshot) -> None:
    """Delete a snapshot and its files. Raises SnapshotInUse when training runs were trained on it:
    their lineage must stay whole."""
    runs = snapshot.runs.count()
    if runs:
        raise SnapshotInUse(f"{runs} training run{'s' if runs != 1 else ''} used this snapshot; it is kept.")
    snapshot.delete()
    _remove_files(snapshot)


def snapshot_file(snapshot: ExportSnapshot, name: str) -> str | None:
    """The storage name (prefstudio.storage.media()) of one of the snapshot's files by its name, None when
    it has no such file."""
    if snapshot.state != ExportSnapshot.State.DONE or name not in {f["name"] for f in snapshot.files}:
        return None
    return f"{snapshot.directory}/{name}"


def _staging(snapshot: ExportSnapshot) -> Path:
    """Where the snapshot's files are written: their place in a local media storage, otherwise a folder
    under PREFSTUDIO_CACHE_DIR that they are uploaded from when whole."""
    folder = storage.local_path(storage.media(), snapshot.directory)
    return folder if folder is not None else storage.cache_dir("exports") / str(snapshot.uuid)


def _publish(snapshot: ExportSnapshot, directory: Path, names: list[str]) -> None:
    """Make the written files the snapshot's stored files: read-only in place on disk (written once, never
    rewritten), or streamed up to the object store and the local copies removed."""
    media = storage.media()
    if storage.local_path(media, snapshot.directory) == directory:
        for name in names:
            os.chmod(directory / name, 0o444)
        return
    for name in names:
        storage.upload(media, f"{snapshot.directory}/{name}", directory / name)
    shutil.rmtree(directory, ignore_errors=True)


def _remove_files(snapshot: ExportSnapshot) -> None:
    """The snapshot's stored files and any local staging copy (a failed or deleted snapshot)."""
    storage.delete_tree(storage.media(), snapshot.directory)
    shutil.rmtree(_staging(snapshot), ignore_errors=True)
