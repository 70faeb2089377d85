"""Blind evaluation rounds: models answer held-out prompts (a generation job), the answers become model-vs-
model pairs in an evaluation project, people judge them in the usual workbench without seeing which
model wrote what, and the judgments say whether the tuned model got better."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class EvaluationRound(models.Model):
    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="evaluation_rounds",
        help_text="Where the pairs are judged.",
    )  # fmt: skip
    source_project = models.ForeignKey(
        "labeling.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Whose rubric the evaluation project copied.",
    )  # fmt: skip
    run = models.ForeignKey(
        "training.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="evaluation_rounds",
    )
    model_refs = models.JSONField(help_text="The models compared; with a run: its base, then the run.")
    generation_job = models.OneToOneField(
        "generation.GenerationJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="evaluation",
    )
    prompts_note = models.CharField(max_length=300, help_text="Which prompts, in words, with their count.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"evaluation round {self.pk}: {' vs '.join(self.model_refs)}"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:round-detail", kwargs={"round_id": self.pk})
