"""Exports: the live preview of what the consensus rules keep, and immutable snapshots written from the
database in a stream (server-side cursors), so memory does not grow with the number of pairs.

The rules (labeling/consensus.py) and the file formats (labeling/exporting.py) are pure; this module
feeds them from the database and records the snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, Case, Count, Max, Q, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Exact
from django.utils import timezone

from labeling import consensus, exporting
from labeling.models import ExportSnapshot, Judgment, Pair, Project
from labeling.review import dawid_skene_posteriors, excluded_annotators

logger = logging.getLogger(__name__)

CHUNK = 2000  # rows per fetch from the server-side cursors
PROGRESS_EVERY = 5000  # pairs between progress writes
SAMPLE_ROWS = 5
LABELS = consensus.LABELS
CRITERION_LABELS = ("a", "b", "tie")


class SnapshotInUse(Exception):
    """The snapshot cannot be deleted: training runs were trained on it."""


def _not_flat() -> Q:
    """Pairs whose prompt cannot be a plain string (exporting.is_flat_prompt), in SQL: a chat prompt
    with a second message, or whose one message is not the user's."""
    return Q(prompt__1__isnull=False) | (Q(prompt__0__role__isnull=False) & ~Q(prompt__0__role="user"))


def _vote_counts(project: Project, excluded: frozenset[int], *, criteria: list[str] = ()) -> Any:
    """Counted votes per pair (excluded annotators left out), ordered by pair id: `pair_id`, one count
    per label, and per criterion i and label `c<i>_<label>`."""
    judgments = Judgment.objects.filter(pair__project=project).exclude(annotator_id__in=excluded)
    counts = {label: Count("id", filter=Q(choice=label)) for label in LABELS}
    for i, name in enumerate(criteria):
        answer = KeyTextTransform(name, "criteria")  # any criterion name, "__" included
        for label in CRITERION_LABELS:
            counts[f"c{i}_{label}"] = Count("id", filter=Exact(answer, Value(label)))
    return judgments.order_by("pair_id").values("pair_id").annotate(**counts)


@dataclass(frozen=True)
class Preview:
    """What the rules would export now: pairs looked at, kept (giving rows in the shape), dropped by
    reason, the first SAMPLE_ROWS rows, the measured disagreement and the judgments counted."""

    pairs: int
    kept: int
    dropped: dict[str, int]
    samples: list[dict[str, Any]]
    disagreement: consensus.Disagreement
    label_noise: float | None
    suggested_label_smoothing: float
    judgments: int

    @property
    def dropped_total(self) -> int:
        return self.pairs - self.kept

    @property
    def dropped_rows(self) -> list[tuple[str, str, int]]:
        """(code, words, count) per reason, largest first."""
        return sorted(
            ((code, consensus.REASONS.get(code, code), n) for code, n in self.dropped.items()),
            key=lambda row: -row[2],
        )


def rules_for(project: Project, **values: Any) -> consensus.ConsensusRules:
    """The project's default rules (min_judgments = its k), with `values` overriding them."""
    return consensus.ConsensusRules(**{"min_judgments": project.overlap, **values})


def _decisions(
    project: Project, rules: consensus.ConsensusRules, excluded: frozenset[int]
) -> tuple[list[int], list[consensus.Decision], list[bool], int]:
    """(pair ids, decisions, flat-prompt flags, judgments counted) for every pair of the project."""
    pairs = list(
        Pair.objects.filter(project=project)
        .order_by("id")
        .annotate(
            flat=Case(When(_not_flat(), then=Value(False)), default=Value(True), output_field=BooleanField())
        )
        .values_list("id", "gold", "adjudication__label", "flat")
    )
    votes = {row["pair_id"]: row for row in _vote_counts(project, excluded)}
    posteriors = dawid_skene_posteriors(project) if rules.method == "dawid-skene" else None
    lists, judgments = [], 0
    for pair_id, *_ in pairs:
        row = votes.get(pair_id)
        counts = [row[label] if row else 0 for label in LABELS]
        judgments += sum(counts)
        lists.append([label for label, n in zip(LABELS, counts, strict=True) for _ in range(n)])
    decisions = consensus.decide_all(
        lists,
        rules=rules,
        adjudications=[adjudication for _, _, adjudication, _ in pairs],
        gold=[bool(gold) for _, gold, _, _ in pairs],
        posteriors=[posteriors.get(pair_id) or {} for pair_id, *_ in pairs]
        if posteriors is not None
        else None,
    )
    return [p[0] for p in pairs], decisions, [p[3] for p in pairs], judgments


def export_preview(project: Project, *, rules: consensus.ConsensusRules, shape: str) -> Preview:
    """Counts of what `rules` keep and drop in `shape`, with the first kept rows as samples."""
    excluded = excluded_annotators(project)
    ids, decisions, flat, judgments = _decisions(project, rules, excluded)
    dropped: dict[str, int] = {}
    kept_ids = []
    for pair_id, decision, is_flat in zip(ids, decisions, flat, strict=True):
        reason = exporting.drop_reason(decision, shape=shape, flat_prompt=is_flat)
        if reason is None:
            kept_ids.append(pair_id)
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    by_id = dict(zip(ids, decisions, strict=True))
    samples = []
    for pair in Pair.objects.filter(pk__in=kept_ids[:SAMPLE_ROWS]).order_by("id"):
        samples += exporting.build_rows(_export_pair(pair, {}), by_id[pair.pk], shape=shape)
    disagreement = consensus.measure_disagreement(decisions)
    noise = _label_noise(project, ids, decisions) if rules.method == "dawid-skene" else None
    return Preview(
        pairs=len(ids),
        kept=len(kept_ids),
        dropped=dropped,
        samples=samples[:SAMPLE_ROWS],
        disagreement=disagreement,
        label_noise=noise if noise is not None else disagreement.label_noise,
        suggested_label_smoothing=consensus.suggest_label_smoothing(decisions, noise=noise),
        judgments=judgments,
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


def _export_pair(pair: Pair, criteria: dict[str, dict[str, int]]) -> exporting.ExportPair:
    return exporting.ExportPair(
        id=exporting.pair_id(external_id=pair.external_id, pk=pair.pk),
        pair_pk=pair.pk,
        prompt=pair.prompt,
        response_a=pair.response_a,
        response_b=pair.response_b,
        model_a=pair.model_a,
        model_b=pair.model_b,
        criteria=criteria,
        metadata=pair.metadata,
    )


def snapshot_start(
    *,
    project: Project,
    user: Any,
    rules: consensus.ConsensusRules,
    shape: str,
    fmt: str,
    eval_fraction: float,
    in_worker: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSnapshot:
    """Record a snapshot and build it: here, or in a worker (queue `default`) while its page shows the
    progress. `in_worker` None: in a worker for more than PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS pairs. A
    failed build is recorded on the snapshot (state, message), not raised. Raises ValueError for a bad
    shape, format or fraction (the message names it)."""
    if shape not in ExportSnapshot.Shape.values:
        raise ValueError(f"shape: {shape!r} is not one of {', '.join(ExportSnapshot.Shape.values)}")
    if fmt not in ExportSnapshot.Format.values:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(ExportSnapshot.Format.values)}")
    exporting.split_of("x", eval_fraction)  # validates the fraction
    pairs = Pair.objects.filter(project=project).count()
    snapshot = ExportSnapshot.objects.create(
        project=project, created_by=user, rules=asdict(rules), shape=shape, format=fmt,
        eval_fraction=eval_fraction, pairs_total=pairs,
    )  # fmt: skip
    if in_worker is None:
        in_worker = pairs > settings.PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS
    if not in_worker:
        with contextlib.suppress(Exception):  # recorded on the snapshot, which the caller shows
            snapshot_build(snapshot, progress=progress)
        snapshot.refresh_from_db()
        return snapshot
    try:
        job = django_rq.get_queue("default").enqueue(
            "labeling.tasks.export_snapshot", snapshot.pk, job_timeout=6 * 3600
        )
    except redis.RedisError as exc:
        snapshot_fail(snapshot, f"Could not reach Redis to start the export in a worker: {exc}")
    else:
        ExportSnapshot.objects.filter(pk=snapshot.pk).update(job_id=job.id)
    snapshot.refresh_from_db()
    return snapshot


def snapshot_fail(snapshot: ExportSnapshot, message: str) -> None:
    ExportSnapshot.objects.filter(pk=snapshot.pk).exclude(state=ExportSnapshot.State.DONE).update(
        state=ExportSnapshot.State.FAILED, message=message, finished_at=timezone.now()
    )
    shutil.rmtree(Path(settings.MEDIA_ROOT) / snapshot.directory, ignore_errors=True)


def _streamed_pairs(
    project: Project, excluded: frozenset[int]
) -> Iterator[tuple[Pair, dict[str, Any] | None]]:
    """Every pair of the project with its counted votes (None without any), in id order: two
    server-side cursors merged, so only a chunk of each is in memory."""
    criteria = [c["name"] for c in project.criteria or []]
    pairs = (
        Pair.objects.filter(project=project)
        .order_by("id")
        .select_related("adjudication")
        .only(
            "id",
            "external_id",
            "prompt",
            "response_a",
            "response_b",
            "model_a",
            "model_b",
            "metadata",
            "gold",
            "adjudication__label",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK)
    )
    votes = _vote_counts(project, excluded, criteria=criteria).iterator(chunk_size=CHUNK)
    row = next(votes, None)
    for pair in pairs:
        while row is not None and row["pair_id"] < pair.pk:
            row = next(votes, None)
        if row is not None and row["pair_id"] == pair.pk:
            yield pair, row
        else:
            yield pair, None


def _criteria_counts(row: dict[str, Any] | None, criteria: list[str]) -> dict[str, dict[str, int]]:
    if row is None:
        return {}
    return {
        name: {label: row[f"c{i}_{label}"] for label in CRITERION_LABELS} for i, name in enumerate(criteria)
    }


def snapshot_build(snapshot: ExportSnapshot, *, progress: Callable[[int, int], None] | None = None) -> None:
    """Write the snapshot's files and record what they hold. Runs once: a snapshot that is not queued
    is left alone. Any error fails it with the reason and removes its partial files."""
    claimed = ExportSnapshot.objects.filter(pk=snapshot.pk, state=ExportSnapshot.State.QUEUED).update(
        state=ExportSnapshot.State.RUNNING
    )
    if not claimed:
        return
    directory = Path(settings.MEDIA_ROOT) / snapshot.directory
    try:
        _write(snapshot, directory, progress)
    except Exception as exc:
        logger.exception("export %s failed", snapshot.uuid)
        snapshot_fail(snapshot, f"The export stopped: {type(exc).__name__}: {exc}")
        raise


def _write(snapshot: ExportSnapshot, directory: Path, progress: Callable[[int, int], None] | None) -> None:
    project = snapshot.project
    rules = consensus.ConsensusRules(**snapshot.rules)
    excluded = excluded_annotators(project)
    criteria = [c["name"] for c in project.criteria or []]
    posterior = dawid_skene_posteriors(project)
    newest = Judgment.objects.filter(pair__project=project).exclude(annotator_id__in=excluded)
    last_judgment = newest.aggregate(last=Max("created_at"))["last"]
    directory.mkdir(parents=True, exist_ok=False)
    done = judgments = 0
    counter = consensus.DisagreementCounter()  # a few histogram cells, however many pairs
    noise_sum = 0.0
    writer = exporting.SnapshotWriter(
        directory, fmt=snapshot.format, shape=snapshot.shape, eval_fraction=snapshot.eval_fraction
    )
    with transaction.atomic(), writer:  # one transaction: the two cursors see the same data
        for pair, row in _streamed_pairs(project, excluded):
            counts = [row[label] if row else 0 for label in LABELS]
            judgments += sum(counts)
            adjudication = getattr(getattr(pair, "adjudication", None), "label", None)
            decision = consensus.decide(
                [label for label, n in zip(LABELS, counts, strict=True) for _ in range(n)],
                rules=rules,
                adjudication=adjudication,
                is_gold=bool(pair.gold),
                posterior=(posterior.get(pair.pk) or {}) if rules.method == "dawid-skene" else None,
            )
            counter.add(decision)
            kept = writer.add(_export_pair(pair, _criteria_counts(row, criteria)), decision) is None
            if kept and decision.chosen is not None and not decision.adjudicated and posterior:
                noise_sum += 1.0 - (posterior.get(pair.pk) or {}).get(decision.label, 0.0)
            done += 1
            if done % PROGRESS_EVERY == 0:
                ExportSnapshot.objects.filter(pk=snapshot.pk).update(pairs_done=done)
                if progress is not None:
                    progress(done, snapshot.pairs_total)
        files = writer.close()
    for info in files:
        os.chmod(directory / info.name, 0o444)  # written once, never rewritten
    disagreement = counter.result()
    measured = disagreement.pairs > 0
    noise = noise_sum / disagreement.pairs if measured and posterior else disagreement.label_noise
    by_split = {info.split: info.rows for info in files}
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(
        state=ExportSnapshot.State.DONE,
        finished_at=timezone.now(),
        pairs_done=done,
        kept=writer.kept,
        dropped=writer.dropped,
        train_rows=by_split.get("train", 0),
        eval_rows=by_split.get("eval", 0),
        files=[asdict(info) for info in files],
        judgments=judgments,
        last_judgment_at=last_judgment,
        excluded_annotators=sorted(excluded),
        disagreement=disagreement.non_unanimous if measured else None,
        label_noise=noise if measured else None,
        suggested_label_smoothing=consensus.suggest_label_smoothing(noise=noise) if measured else None,
    )


def snapshot_delete(snapshot: ExportSnapshot) -> None:
    """Delete a snapshot and its files. Raises SnapshotInUse when training runs were trained on it:
    their lineage must stay whole."""
    runs = snapshot.runs.count()
    if runs:
        raise SnapshotInUse(f"{runs} training run{'s' if runs != 1 else ''} used this snapshot; it is kept.")
    directory = Path(settings.MEDIA_ROOT) / snapshot.directory
    snapshot.delete()
    shutil.rmtree(directory, ignore_errors=True)


def snapshot_file(snapshot: ExportSnapshot, name: str) -> Path | None:
    """The path of one of the snapshot's files by its name, None when it has no such file."""
    if snapshot.state != ExportSnapshot.State.DONE or name not in {f["name"] for f in snapshot.files}:
        return None
    return Path(settings.MEDIA_ROOT) / snapshot.directory / name
