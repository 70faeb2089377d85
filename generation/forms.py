"""Forms of the generation pages: a generation job, an endpoint, a playground prompt."""

from __future__ import annotations

from typing import Any

from django import forms

from generation import registry
from generation.models import Endpoint, GenerationJob
from generation.services import MAX_PROMPTS, PromptFileError, prompts_from_file

SOURCES = [
    ("project", "The target project's own prompts"),
    ("snapshot", "The eval prompts of one of its snapshots"),
    ("file", "A prompt file (JSONL with a prompt field, or CSV with a prompt column)"),
]


class JobForm(forms.Form):
    """A generation job: where the pairs go, which prompts, which models, how to sample."""

    project = forms.ModelChoiceField(queryset=None, help_text="The pairs land here as a new batch.")
    kind = forms.ChoiceField(
        choices=[(GenerationJob.Kind.SAMPLES, "N samples from one model (every pair of distinct answers)"),
                 (GenerationJob.Kind.VERSUS, "One answer each from two or more models")],  # fmt: skip
        widget=forms.RadioSelect, initial=GenerationJob.Kind.SAMPLES,
    )  # fmt: skip
    models = forms.MultipleChoiceField(
        choices=(), widget=forms.CheckboxSelectMultiple, help_text="One for samples; two or more to compare."
    )
    samples = forms.IntegerField(min_value=2, max_value=8, initial=2, required=False, label="Samples (N)")
    source = forms.ChoiceField(choices=SOURCES, widget=forms.RadioSelect, initial="project", label="Prompts")
    snapshot = forms.ModelChoiceField(queryset=None, required=False, help_text="For its eval prompts.")
    prompt_file = forms.FileField(required=False, label="Prompt file")
    limit = forms.IntegerField(
        min_value=1, max_value=MAX_PROMPTS, initial=200, label="At most this many prompts"
    )
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=256, label="Max new tokens")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=1.0, help_text="0: greedy.")
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=1.0, label="Top-p")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, required=False, initial=0)

    def __init__(self, *args: Any, projects: Any, snapshots: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["snapshot"].queryset = snapshots
        self.fields["models"].choices = registry.choices()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        models, kind = data.get("models") or [], data.get("kind")
        if kind == GenerationJob.Kind.SAMPLES:
            if len(models) != 1:
                self.add_error("models", "N samples come from one model: pick exactly one.")
            if not data.get("samples"):
                self.add_error("samples", "How many samples per prompt (at least 2).")
        elif kind == GenerationJob.Kind.VERSUS and len(models) < 2:
            self.add_error("models", "A comparison needs two or more models.")
        source = data.get("source")
        if source == "snapshot":
            snapshot = data.get("snapshot")
            if snapshot is None:
                self.add_error("snapshot", "Pick the snapshot whose eval prompts to use.")
            elif (project := data.get("project")) and snapshot.project_id != project.pk:
                self.add_error("snapshot", "That snapshot belongs to another project.")
        if source == "file":
            upload = data.get("prompt_file")
            if upload is None:
                self.add_error("prompt_file", "Choose a prompt file.")
            else:
                try:
                    data["file_prompts"] = prompts_from_file(upload.read(), upload.name)
                except PromptFileError as exc:
                    self.add_error("prompt_file", str(exc))
        return data


class EndpointForm(forms.ModelForm):
    class Meta:
        model = Endpoint
        fields = ["name", "base_url", "model", "api_key_env"]


class PlaygroundForm(forms.Form):
    """A prompt for two models, side by side."""

    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), max_length=20_000, required=False)
    eval_prompt = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Or an eval prompt"
    )
    left = forms.ChoiceField(label="Left model")
    right = forms.ChoiceField(label="Right model")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=2048, initial=256, label="Max new tokens")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.0, help_text="0: greedy.")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, required=False, initial=0)

    def __init__(self, *args: Any, eval_prompts: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_prompts = eval_prompts
        self.fields["eval_prompt"].choices = [("", "—")] + [
            (i, _short(p)) for i, p in enumerate(eval_prompts[:100])
        ]
        models = registry.choices()
        self.fields["left"].choices = models
        self.fields["right"].choices = models

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        picked = data.get("eval_prompt")
        if picked is not None:
            data["the_prompt"] = self.eval_prompts[picked]
        elif (data.get("prompt") or "").strip():
            data["the_prompt"] = data["prompt"].strip()
        else:
            self.add_error("prompt", "Type a prompt or pick an eval prompt.")
        return data


def _short(prompt: Any) -> str:
    if not isinstance(prompt, str):
        prompt = next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), "")
    return prompt if len(prompt) <= 90 else prompt[:89] + "…"
