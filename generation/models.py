"""Models the app can call, and generation jobs: prompts answered by one or more models, kept answer by
answer (so a restarted job skips what is done), then paired into a batch of a project.

A model is named by a reference (`generation.registry`): `base:NAME` (an allow-listed base model),
`run:ID` (a succeeded training run: its base with its LoRA adapter) or `endpoint:NAME` (an
OpenAI-compatible server registered below).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from prefstudio.job_rows import JobRow

BASE_URL = RegexValidator(
    r"^https?://[^\s/?#]+(/[^\s?#]*)?$", "An http:// or https:// address, e.g. http://gpu-host:8000/v1."
)
ENV_NAME = RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "An environment variable name: capitals, digits and _.")


class Endpoint(models.Model):
    """An OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API). Its API key is never
    stored: `api_key_env` names the environment variable of the workers that holds it."""

    name = models.SlugField(max_length=64, unique=True, help_text="Referred to as endpoint:NAME.")
    base_url = models.CharField(
        max_length=500, validators=[BASE_URL], help_text="e.g. http://gpu-host:8000/v1"
    )  # an internal host name has no dot, which URLField refuses
    model = models.CharField(
        max_length=200, help_text="The model name the server expects (a LoRA module's name)."
    )
    api_key_env = models.CharField(
        max_length=100, blank=True, validators=[ENV_NAME],
        help_text="Name of the environment variable holding the API key (empty: none).",
    )  # fmt: skip
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"endpoint:{self.name}"


class GenerationJob(JobRow):
    """Prompts answered by models in a worker (the shared job row: state, heartbeat, cancel, log)."""

    class Kind(models.TextChoices):
        SAMPLES = "samples", "N samples from one model"
        VERSUS = "versus", "One answer each from two or more models"
        NEXT_ROUND = "next-round", "Next round: two samples from a tuned model"
        EVALUATION = "evaluation", "Blind evaluation: one answer each from two or more models"
        PLAYGROUND = "playground", "Playground"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    project = models.ForeignKey(
        "labeling.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="generation_jobs",
        help_text="Where the pairs go (none for the playground).",
    )  # fmt: skip
    run = models.ForeignKey(
        "training.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="generation_jobs",
    )
    model_refs = models.JSONField(help_text='Models as references: ["base:NAME", "run:12", "endpoint:NAME"].')
    params = models.JSONField(help_text="generation.backends.base.SamplingParams fields.")
    samples = models.PositiveSmallIntegerField(default=1, help_text="Answers per prompt from each model.")
    prompts = models.JSONField(help_text="The prompts: text, or lists of chat messages.")
    source = models.CharField(max_length=300, help_text="Where the prompts came from, in words.")
    done = models.PositiveIntegerField(default=0, help_text="Prompts answered by every model.")
    total = models.PositiveIntegerField(default=0)
    tokens_per_second = models.FloatField(null=True, blank=True)
    batch = models.ForeignKey(
        "labeling.ImportBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pairs_made = models.PositiveIntegerField(default=0)
    identical_skipped = models.PositiveIntegerField(
        default=0, help_text="Pairs of identical answers, not made."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="generation_job_state")]

    def __str__(self) -> str:
        return f"generation job {self.pk} ({self.kind}, {self.state})"

    def get_absolute_url(self) -> str:
        if self.kind == self.Kind.PLAYGROUND:
            return reverse("generation:playground-job", kwargs={"job_id": self.pk})
        return reverse("generation:job-detail", kwargs={"job_id": self.pk})

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class GenerationAnswer(models.Model):
    """One answer of one model to one prompt of a job (sample 0..samples-1)."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="answers")
    prompt_index = models.PositiveIntegerField()
    model_ref = models.CharField(max_length=200)
    sample = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=8)

    class Meta:
        ordering = ["job", "prompt_index", "model_ref", "sample"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "prompt_index", "model_ref", "sample"], name="generation_answer_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_ref} on prompt {self.prompt_index} of job {self.job_id} (sample {self.sample})"
