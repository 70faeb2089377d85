"""What the JSON API takes and gives, as pydantic schemas: the OpenAPI document is generated from them.

Outputs read the models' fields (a `resolve_*` where a value is a related object's key or is computed);
inputs take the services' arguments with the same defaults and bounds as the pages' forms.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db import models
from ninja import Field, Schema
from pydantic import ConfigDict, StringConstraints, create_model

from evaluation.services import round_results
from generation.models import GenerationJob
from generation.services import MAX_PROMPT_CHARS, MAX_PROMPTS
from labeling.batches import batch_progress
from labeling.consensus import METHODS
from labeling.models import ExportSnapshot, ImportBatch
from prefstudio.job_rows import JobRow
from training.config import TrainConfig


def _choices(choices: type[models.TextChoices]) -> Any:
    """A TextChoices' values as a Literal type: an enum in place (several models' enums share a class name,
    State, and would share one component of the OpenAPI document)."""
    return Literal[tuple(choices.values)]


ImportState = _choices(ImportBatch.State)
ExportState = _choices(ExportSnapshot.State)
ExportShape = _choices(ExportSnapshot.Shape)
ExportFormat = _choices(ExportSnapshot.Format)
JobState = _choices(JobRow.State)
JobKind = _choices(GenerationJob.Kind)
ConsensusMethod = Literal[METHODS]  # type: ignore[valid-type]


class _Strict(Schema):
    """An input that refuses fields it does not know (a misspelt option is an error, not a default)."""

    model_config = ConfigDict(extra="forbid")


class ErrorItem(Schema):
    loc: list[str | int] = Field(description='Where: ["body", "line", 12, "response_a"], ["query", "limit"].')
    msg: str


class ErrorOut(Schema):
    """Every error response, whatever its status."""

    detail: str
    errors: list[ErrorItem]


class ProjectOut(Schema):
    slug: str
    name: str
    description: str
    rubric: str = Field(description="Markdown shown to annotators beside every pair.")
    criteria: list[dict[str, Any]]
    choices: list[str] = Field(description="The verdicts annotators may give.")
    allow_tie: bool
    allow_both_bad: bool
    use_strength: bool
    require_strength: bool
    overlap: int = Field(description="Distinct annotators wanted per pair (k).")
    lease_minutes: int
    gold_rate: float
    archived: bool
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_choices(project: Any) -> list[str]:
        return [value for value, _ in project.choices]


class ImportOut(Schema):
    uuid: UUID
    project: str
    source_name: str
    format: str
    state: ImportState
    skip_invalid: bool
    size_bytes: int
    records: int = Field(description="Records read, good and bad.")
    imported: int
    duplicates: int
    rejected: int
    error_count: int
    errors: list[str] = Field(description="The first problems found, as text.")
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_project(batch: ImportBatch) -> str:
        return batch.project.slug


class ImportStatusOut(ImportOut):
    progress: int | None = Field(description="Percent done while a worker imports it.")

    @staticmethod
    def resolve_progress(batch: ImportBatch) -> int | None:
        return batch_progress(batch)


class AgreementOut(Schema):
    """The project's agreement report: the numbers of its Review page and of `manage.py agreement_report
    --json` (labeling.review_stats.project_report documents every key)."""

    settings: dict[str, Any]
    headline: dict[str, Any]
    criteria: dict[str, Any]
    annotators: list[dict[str, Any]]
    cohen_kappa: dict[str, Any]
    over_time: list[dict[str, Any]]
    disagreements: dict[str, Any]
    dawid_skene: dict[str, Any]
    audit: dict[str, Any] | None
    leaderboard: dict[str, Any] | None
    computed_at: str = Field(description="When it was computed (ISO 8601, UTC).")
    newer_judgments: int | None = Field(description="Judgments made since it was computed (null: none).")


Share = typing.Annotated[str, StringConstraints(max_length=32)]


class ExportIn(_Strict):
    """The export rules (labeling.consensus.ConsensusRules), shape, format and split."""

    shape: ExportShape = ExportSnapshot.Shape.STANDARD.value
    format: ExportFormat = ExportSnapshot.Format.JSONL.value
    eval_fraction: float = Field(0.05, ge=0, le=0.5, description="Share of pairs held out.")
    include_metadata: bool = True
    method: ConsensusMethod = "majority"
    min_judgments: int | None = Field(None, ge=1, le=100, description="Default: the project's overlap k.")
    min_share: Share = Field("2/3", description="Majority only: 2/3, 0.75 or 75%.")
    min_posterior: float = Field(0.8, ge=0, le=1, description="Dawid–Skene only.")
    drop_ties: bool = True
    drop_both_bad: bool = True
    adjudication_overrides: bool = True
    drop_gold: bool = False


class ExportFileOut(Schema):
    name: str
    split: str
    rows: int
    pairs: int
    bytes: int
    sha256: str


class ExportOut(Schema):
    uuid: UUID
    project: str
    state: ExportState
    message: str
    rules: dict[str, Any]
    shape: ExportShape
    format: ExportFormat
    eval_fraction: float
    include_metadata: bool
    min_share_text: str
    pairs_total: int
    pairs_done: int
    kept: int
    dropped: dict[str, int] = Field(description="Dropped pairs by reason code.")
    train_rows: int
    eval_rows: int
    files: list[ExportFileOut]
    judgments: int
    disagreement: float | None
    label_noise: float | None
    suggested_label_smoothing: float | None
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_project(snapshot: ExportSnapshot) -> str:
        return snapshot.project.slug


def _train_config_schema() -> type[Schema]:
    """TrainConfig's fields but `base_model`, with its types and defaults (its own checks still run)."""
    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default) for f in dataclasses.fields(TrainConfig) if f.name != "base_model"
    }
    return create_model("TrainConfigIn", __base__=_Strict, **fields)


TrainConfigIn = _train_config_schema()


class RunIn(_Strict):
    snapshot: UUID = Field(description="A done export in a preference shape, with an eval split.")
    base_model: str = Field(description="A name of the allow-list (PREFSTUDIO_BASE_MODELS).")
    config: TrainConfigIn = Field(default_factory=TrainConfigIn)  # type: ignore[valid-type]
    processes: int | None = Field(
        None, ge=1, le=64, description="Data-parallel processes (GPUs); none: the worker's GPUs, 1 on CPU."
    )


class RunOut(Schema):
    id: int
    project: str
    snapshot: UUID
    base_model: str
    config: dict[str, Any]
    processes: int | None = Field(description="Processes asked for; none: every GPU of the worker.")
    world_size: int | None = Field(description="Processes the run trains with, once a worker started it.")
    state: JobState
    phase: str
    phase_done: int
    phase_total: int
    step: int
    total_steps: int
    percent: int
    tokens_per_second: float | None
    eta_seconds: float | None
    worker_host: str
    device: str
    attempts: int
    error: str
    initial_metrics: dict[str, Any]
    final_metrics: dict[str, Any]
    share_change: dict[str, Any]
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @staticmethod
    def resolve_project(run: Any) -> str:
        return run.snapshot.project.slug

    @staticmethod
    def resolve_snapshot(run: Any) -> UUID:
        return run.snapshot.uuid


class MetricOut(Schema):
    kind: Literal["train", "eval"]
    step: int
    values: dict[str, float | None] = Field(description="TRL's metric names -> numbers.")


class RunDetailOut(RunOut):
    data_report: dict[str, Any]
    log_tail: str
    metrics: list[MetricOut]

    @staticmethod
    def resolve_metrics(run: Any) -> list[Any]:
        return list(run.metrics.order_by("kind", "step"))


PromptText = typing.Annotated[str, StringConstraints(pattern=r"\S", max_length=MAX_PROMPT_CHARS)]


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class JobIn(_Strict):
    """A generation job, as the New generation job page makes one."""

    project: str = Field(description="Slug of the project the pairs go to (one you lead).")
    kind: Literal["samples", "versus"] = "samples"
    models: list[str] = Field(min_length=1, description="base:NAME, run:ID or endpoint:NAME.")
    samples: int = Field(2, ge=2, le=8, description="Samples per prompt (kind samples).")
    source: Literal["project", "snapshot", "prompts"] = "project"
    snapshot: UUID | None = Field(None, description="source snapshot: whose eval prompts.")
    prompts: list[PromptText | list[Message]] | None = Field(
        None, max_length=MAX_PROMPTS, description="source prompts: text, or chat messages."
    )
    limit: int = Field(200, ge=1, le=MAX_PROMPTS, description="At most this many prompts.")
    max_new_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, ge=0.01, le=1)
    seed: int | None = Field(0, ge=0, le=2**32 - 1)


class JobOut(Schema):
    id: int
    kind: JobKind
    project: str | None
    run: int | None
    model_refs: list[str]
    params: dict[str, Any]
    samples: int
    source: str
    prompts: int = Field(description="How many prompts.")
    state: JobState
    done: int = Field(description="Prompts answered by every model.")
    total: int
    percent: int
    tokens_per_second: float | None
    pairs_made: int
    identical_skipped: int
    batch: UUID | None = Field(description="The import batch its pairs went into.")
    error: str
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_project(job: GenerationJob) -> str | None:
        return job.project.slug if job.project_id else None

    @staticmethod
    def resolve_run(job: GenerationJob) -> int | None:
        return job.run_id

    @staticmethod
    def resolve_prompts(job: GenerationJob) -> int:
        return len(job.prompts)

    @staticmethod
    def resolve_batch(job: GenerationJob) -> UUID | None:
        return job.batch.uuid if job.batch_id else None


class WinRateOut(Schema):
    """evaluation.stats.WinRate: the tuned model's share of prompts won over its base."""

    rate: float | None
    low: float | None
    high: float | None
    level: float
    prompts: int
    judgments: int
    ties: int
    verdict: str


class RoundOut(Schema):
    id: int
    project: str = Field(description="Where its pairs are judged.")
    source_project: str | None
    run: int | None
    model_refs: list[str]
    generation_job: int | None
    prompts_note: str
    created_at: datetime

    @staticmethod
    def resolve_project(round_: Any) -> str:
        return round_.project.slug

    @staticmethod
    def resolve_source_project(round_: Any) -> str | None:
        return round_.source_project.slug if round_.source_project_id else None

    @staticmethod
    def resolve_run(round_: Any) -> int | None:
        return round_.run_id

    @staticmethod
    def resolve_generation_job(round_: Any) -> int | None:
        return round_.generation_job_id


class RoundResultsOut(Schema):
    """evaluation.services.round_results, win rates as WinRate.to_dict() gives them."""

    pairs: int
    judgments: int
    win_rate: WinRateOut | None
    sentence: str | None = None
    criteria: dict[str, WinRateOut]
    alpha: float | None


class RoundDetailOut(RoundOut):
    results: RoundResultsOut

    @staticmethod
    def resolve_results(round_: Any) -> dict[str, Any]:
        results = round_results(round_)
        rate = results["win_rate"]
        criteria = {name: r.to_dict() for name, r in results["criteria"].items()}
        return {**results, "win_rate": rate.to_dict() if rate is not None else None, "criteria": criteria}
