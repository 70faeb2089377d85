"""Training runs: a DPO run on an export snapshot, its progress and metrics as the worker reports them.

The row is the truth about a run: RQ carries the job, but its registries expire, so state, progress,
metrics and errors are written here by the job as it goes.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.urls import reverse

from prefstudio.job_rows import JobRow


class TrainingRun(JobRow):
    """A DPO run: the shared job row (prefstudio.job_rows: state, worker, heartbeat, cancel, attempts,
    error, log tail) with its snapshot, config, progress and outcome."""

    snapshot = models.ForeignKey("labeling.ExportSnapshot", on_delete=models.PROTECT, related_name="runs")
    base_model = models.CharField(max_length=200, help_text="A name from PREFSTUDIO_BASE_MODELS.")
    config = models.JSONField(help_text="training.engine.TrainConfig, as to_dict() gives it.")
    phase = models.CharField(
        max_length=32, blank=True,
        help_text="What a running run is doing: loading, reference:<split>, training, evaluating, saving.",
    )  # fmt: skip
    phase_done = models.PositiveIntegerField(
        default=0, help_text="Pairs done in the phase (reference, eval)."
    )
    phase_total = models.PositiveIntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    tokens_per_second = models.FloatField(null=True, blank=True)
    artifact_path = models.CharField(max_length=500, blank=True, help_text="Relative to ARTIFACT_ROOT.")
    processes = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Training processes asked for, one per GPU (torchrun); empty: every GPU of the worker's "
        "host, 1 on a CPU.",
    )
    world_size = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Processes the run trains with, set when a worker starts it."
    )
    initial_metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation at step 0.")
    final_metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation at the end.")
    data_report = models.JSONField(
        default=dict, blank=True, help_text="Pairs kept, dropped and changed by reason, per split."
    )
    share_change = models.JSONField(
        default=dict,
        blank=True,
        help_text="Held-out preference share at step 0 and at the end, with its 95% interval "
        "(training.compare.ShareChange).",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="run_state")]

    def __str__(self) -> str:
        return f"run {self.pk} on {self.base_model} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("training:run-detail", kwargs={"run_id": self.pk})

    @property
    def outcome(self) -> Any:
        """The before/after comparison as a `training.compare.ShareChange`, or None before a run ends."""
        from training.compare import ShareChange

        return ShareChange.from_dict(self.share_change) if self.share_change else None

    @property
    def phase_text(self) -> str:
        """The phase in words, with its progress: "reference log-probs: 12 / 29 train pairs"."""
        name, _, split = self.phase.partition(":")
        count = f": {self.phase_done} / {self.phase_total}" if self.phase_total else ""
        return {
            "loading": "loading the model and tokenizing the pairs",
            "reference": f"reference log-probs{count} {split} pairs",
            "evaluating": f"evaluating{count} eval pairs",
            "saving": "saving a checkpoint or the adapter",
            "training": "training",
        }.get(name, name)

    @property
    def effective_batch(self) -> str:
        """Pairs per optimizer step in words: per-process batch × processes × accumulation steps, with the
        processes it trains with once started, else those asked for (config.effective_batch_words)."""
        from training.config import effective_batch_words

        return effective_batch_words(
            int(self.config.get("batch_size", 1)),
            int(self.config.get("gradient_accumulation_steps", 1)),
            self.world_size or self.processes,
        )

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


class RunMetric(models.Model):
    """The metrics of one optimizer step ("train") or one evaluation ("eval") of a run."""

    class Kind(models.TextChoices):
        TRAIN = "train", "Training step"
        EVAL = "eval", "Evaluation"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    step = models.PositiveIntegerField()
    values = models.JSONField(help_text="TRL's metric names -> numbers.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "kind", "step"]
        constraints = [
            # A resumed run repeats the steps after its last checkpoint: the newer values replace them.
            models.UniqueConstraint(fields=["run", "kind", "step"], name="run_metric_once_per_step")
        ]

    def __str__(self) -> str:
        return f"{self.run} {self.kind} step {self.step}"
