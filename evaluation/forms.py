"""The form that starts an evaluation round."""

from __future__ import annotations

from typing import Any

from django import forms

from generation.services import PromptFileError, prompts_from_file


class RoundForm(forms.Form):
    """With a run: its base against it on its held-out eval prompts. Without: two or more models on a
    prompt file. The pairs go to a new evaluation project unless one is chosen."""

    models = forms.MultipleChoiceField(
        choices=(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Two or more (without a run).",
    )
    prompt_file = forms.FileField(
        required=False, help_text="JSONL with a prompt field, or CSV with a prompt column."
    )
    project = forms.ModelChoiceField(
        queryset=None, required=False, label="Evaluation project",
        empty_label="A new evaluation project (the source's rubric and people)",
    )  # fmt: skip
    source_project = forms.ModelChoiceField(
        queryset=None, required=False, label="Rubric and people from", help_text="Without a run."
    )
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=256, label="Max new tokens")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, initial=0)

    def __init__(
        self, *args: Any, run: Any, projects: Any, models: list[tuple[str, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        self.fields["project"].queryset = projects
        self.fields["source_project"].queryset = projects
        self.fields["models"].choices = models
        if run is not None:
            for name in ("models", "prompt_file", "source_project"):
                del self.fields[name]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.run is not None:
            return data
        if len(data.get("models") or []) < 2:
            self.add_error("models", "Pick two or more models to compare.")
        if not data.get("project") and not data.get("source_project"):
            self.add_error(
                "source_project",
                "Choose the project whose rubric and people judge, or the evaluation project.",
            )
        upload = data.get("prompt_file")
        if upload is None:
            self.add_error(
                "prompt_file", "Choose a prompt file (without a run there are no held-out prompts)."
            )
        else:
            try:
                data["prompts"] = prompts_from_file(upload.read(), upload.name)
            except PromptFileError as exc:
                self.add_error("prompt_file", str(exc))
        return data


class JudgeForm(forms.Form):
    """An AI judge over a project's pairs: which project, which model, the judging prompt, which pairs."""

    project = forms.ModelChoiceField(
        queryset=None, help_text="Whose pairs are judged, and whose people it is measured against."
    )
    model = forms.ChoiceField(choices=(), help_text="A base model, a tuned run, or an endpoint.")
    name = forms.CharField(
        max_length=120, required=False, help_text="How the judge is shown (default: the model's name)."
    )
    scope = forms.ChoiceField(choices=(), widget=forms.RadioSelect, initial="all")
    template = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "class": "mono"}), label="Judging prompt",
        help_text="Filled in per pair and order: {rubric}, {criteria} (the project's), {prompt}, {first}, "
        "{second}. It must ask for exactly one of A, B or tie: the verdict is read from the model's "
        "probabilities of those answers (an endpoint without log-probabilities: its answer, strictly).",
    )  # fmt: skip

    def __init__(self, *args: Any, projects: Any, models: list[tuple[str, str]], **kwargs: Any) -> None:
        from evaluation.judges import DEFAULT_TEMPLATE
        from evaluation.models import Judge

        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["model"].choices = models
        self.fields["scope"].choices = Judge.Scope.choices
        self.fields["template"].initial = DEFAULT_TEMPLATE

    def clean_template(self) -> str:
        from evaluation.judge_jobs import check_template

        try:
            return check_template(self.cleaned_data["template"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc).removeprefix("template: ")) from None
