"""Blind evaluation rounds: models answer held-out prompts (a generation job), the answers become model-vs-
model pairs in an evaluation project, people judge them in the usual workbench without seeing which
model wrote what, and the judgments say whether the tuned model got better."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from prefstudio.job_rows import JobRow


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


class Judge(JobRow):
    """An AI judge run over a project's pairs: a model (a reference of generation.registry), a judging
    prompt and its settings, and the job that judges every pair in both orders (the shared job row:
    state, heartbeat, cancel, log). Its verdicts are a model annotator's, kept apart from people's."""

    class Scope(models.TextChoices):
        ALL = "all", "Every pair of the project"
        UNSETTLED = "unsettled", "Only pairs without a human consensus"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="judges")
    name = models.CharField(max_length=120, help_text="How the judge is shown (a model annotator's name).")
    model_ref = models.CharField(max_length=300, help_text="base:NAME, run:ID or endpoint:NAME.")
    template = models.TextField(
        help_text="The judging prompt: {rubric}, {criteria}, {prompt}, {first} and {second} are filled in."
    )
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.ALL)
    done = models.PositiveIntegerField(default=0, help_text="Pairs judged (both orders).")
    total = models.PositiveIntegerField(default=0, help_text="Pairs to judge.")
    pairs_per_second = models.FloatField(null=True, blank=True)
    unparseable = models.PositiveIntegerField(default=0, help_text="Pairs whose answer could not be read.")
    inconsistent = models.PositiveIntegerField(
        default=0, help_text="Pairs whose verdict changed with the sides swapped."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="judge_state")]

    def __str__(self) -> str:
        return f"judge {self.pk}: {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:judge-detail", kwargs={"judge_id": self.pk})

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class JudgeVerdict(models.Model):
    """One judge's verdict on one pair: the probabilities of a, b and tie with A shown first (`shown`) and
    with the sides swapped (`swapped`, read back in the pair's own labels), their average, the label it
    makes most likely, and whether the two orders disagreed. An endpoint answer that could not be read
    leaves `label` empty and is counted, never guessed (`answer` keeps its text)."""

    class Method(models.TextChoices):
        PROBABILITIES = "probabilities", "Next-token probabilities"
        LOGPROBS = "logprobs", "Log-probabilities of the endpoint"
        PARSED = "parsed", "Parsed answer"
        UNPARSEABLE = "unparseable", "Unparseable answer"

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="verdicts")
    pair = models.ForeignKey("labeling.Pair", on_delete=models.CASCADE, related_name="judge_verdicts")
    shown = models.JSONField(null=True, help_text="[P(a), P(b), P(tie)] with A shown first.")
    swapped = models.JSONField(null=True, help_text="[P(a), P(b), P(tie)] with B shown first.")
    p_a = models.FloatField(null=True)
    p_b = models.FloatField(null=True)
    p_tie = models.FloatField(null=True)
    label = models.CharField(max_length=4, blank=True, help_text="a, b or tie; empty when unparseable.")
    probability = models.FloatField(null=True, help_text="The order-averaged probability of `label`.")
    inconsistent = models.BooleanField(default=False)
    method = models.CharField(max_length=16, choices=Method.choices)
    answer = models.TextField(blank=True, help_text="The answer's text when it could not be read.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["judge", "pair"], name="judge_verdict_once")]

    def __str__(self) -> str:
        return f"judge {self.judge_id} on pair {self.pair_id}: {self.label or 'unparseable'}"
