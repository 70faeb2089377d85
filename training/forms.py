"""The new-run form: a snapshot, an allowed base model and the DPO settings, each explained."""

from __future__ import annotations

from typing import Any

from django import forms

from labeling.models import ExportSnapshot
from training.config import LOSS_TYPES, SEED_MAX, TrainConfig, effective_batch_words
from training.services import base_models

LOSS_HELP = {
    "sigmoid": "DPO (Rafailov et al. 2023); with label smoothing it is cDPO, for noisy labels",
    "ipo": "IPO (Azar et al. 2023): a squared loss that does not push margins without bound",
    "hinge": "hinge loss on the reward margin (SLiC, Zhao et al. 2023)",
    "robust": "robust DPO (Chowdhury et al. 2024): unbiased under a known label-flip rate",
    "simpo": "SimPO (Meng et al. 2024): reference-free, length-normalized, with a target margin",
}

# Far beyond the demo's 50 steps, short of weeks: a step takes seconds on a CPU, a fraction of one on a GPU.
# Eval and save periods share the cap; one longer than the run only means none before its end.
MAX_STEPS = 100_000
MAX_PROCESSES = 64


def snapshot_label(snapshot: ExportSnapshot) -> str:
    """A snapshot told apart from its neighbours: project, number, when, shape, format and counts."""
    return (
        f"{snapshot.project.name}: snapshot #{snapshot.pk} of {snapshot.created_at:%Y-%m-%d %H:%M}, "
        f"{snapshot.shape} {snapshot.format}, {snapshot.train_rows} train / {snapshot.eval_rows} eval pairs"
    )


class RunForm(forms.Form):
    snapshot = forms.ModelChoiceField(
        queryset=ExportSnapshot.objects.none(),
        to_field_name="uuid",
        help_text="Only snapshots with an eval split and enough pairs in a preference shape.",
    )
    base_model = forms.ChoiceField(help_text="From the allow-list in settings (PREFSTUDIO_BASE_MODELS).")
    loss_type = forms.ChoiceField(
        label="Method",
        choices=[(t, f"{t}: {LOSS_HELP[t]}") for t in LOSS_TYPES],
        initial="simpo",
        help_text="The default, SimPO with an SFT weight, needs no reference pass and raises the same "
        "length-normalised preference that the held-out share measures; DPO (sigmoid) is the classic choice, "
        "and keeps the tuned model near its base.",
    )
    beta = forms.FloatField(
        min_value=1e-4, max_value=20, initial=2.0,
        help_text="For SimPO, the scale of its length-normalised reward (2 to 2.5 in its paper). For DPO and "
        "its kin, the KL knob: how far the tuned model may move from the base (0.1 is usual; lower moves "
        "further).",
    )  # fmt: skip
    simpo_gamma = forms.FloatField(
        min_value=0, max_value=10, initial=1.0, required=False, label="SimPO γ",
        help_text="SimPO only: the target margin between the chosen and rejected rewards.",
    )  # fmt: skip
    label_smoothing = forms.FloatField(
        min_value=0, max_value=0.49, initial=0.0, required=False,
        help_text="cDPO: the share of labels you expect to be wrong. Pre-filled from the snapshot's "
        "measured disagreement. For sigmoid, robust and SimPO.",
    )  # fmt: skip
    sft_weight = forms.FloatField(
        min_value=0, max_value=10, initial=1.0, required=False, label="SFT weight",
        help_text="Adds the chosen responses' language-modelling loss with this weight (RPO, Pang et al. "
        "2024; TRL's \"sft\" loss term): the model learns to write the chosen answers, not only to avoid the "
        "rejected ones, and does not drift into degenerate text. 0 is the method alone.",
    )  # fmt: skip
    learning_rate = forms.FloatField(
        min_value=1e-8, max_value=1e-2, initial=2e-4,
        help_text="LoRA trains small adapters that start at zero, so it needs a larger rate than a full "
        "fine-tune (TRL's DPO default of 1e-6 is for all weights). The defaults (2e-4, 50 steps of 4 "
        "pairs) teach the demo model the demo's preference on a CPU in minutes; 5e-5 over more steps is a "
        "common start for larger models.",
    )  # fmt: skip
    num_epochs = forms.IntegerField(min_value=1, max_value=100, initial=1, label="Epochs")
    max_steps = forms.IntegerField(
        min_value=1, max_value=MAX_STEPS, required=False, initial=50,
        error_messages={"max_value": "At most %(limit_value)s steps; leave it empty to train by epochs."},
        help_text="Optimizer steps; overrides epochs when set.",
    )  # fmt: skip
    batch_size = forms.IntegerField(min_value=1, max_value=512, initial=4, help_text="Pairs per micro-step.")
    gradient_accumulation_steps = forms.IntegerField(
        min_value=1, max_value=512, initial=1, help_text="Micro-steps per optimizer step."
    )
    processes = forms.IntegerField(
        min_value=1, max_value=MAX_PROCESSES, required=False, label="Processes (GPUs)",
        help_text="Data-parallel processes, one per GPU, launched with torchrun on one worker host. Empty: "
        "every GPU of the worker that takes the run (1 on a CPU). Each process takes its own batch, so a "
        "step sees batch size × processes × accumulation steps pairs.",
    )  # fmt: skip
    max_length = forms.IntegerField(
        min_value=16,
        max_value=32768,
        initial=256,
        help_text="Tokens per sequence, prompt and response. 256 holds the demo's pairs; check the data to "
        "see what longer pairs would lose.",
    )
    max_prompt_length = forms.IntegerField(
        min_value=8, max_value=32768, required=False, label="Max prompt length",
        help_text="Keep a long prompt's last N tokens. Empty: a pair whose prompt leaves no room for a "
        "response within max length is dropped, and counted.",
    )  # fmt: skip
    lora_r = forms.IntegerField(min_value=1, max_value=1024, initial=16, label="LoRA rank")
    lora_alpha = forms.IntegerField(min_value=1, max_value=4096, initial=32, label="LoRA alpha")
    lora_dropout = forms.FloatField(min_value=0, max_value=0.9, initial=0.0, label="LoRA dropout")
    seed = forms.IntegerField(
        min_value=0, max_value=SEED_MAX, initial=42,
        error_messages={"max_value": "At most %(limit_value)s (2³² − 1), the largest seed NumPy takes."},
    )  # fmt: skip
    system_turn = forms.ChoiceField(
        label="System turns",
        choices=[
            ("keep", "Keep them: a template that refuses system turns stops the run, naming the row"),
            ("merge", "Merge them into the first user turn where the template refuses system turns"),
        ],
        initial="keep",
        help_text="Some chat templates (Gemma's, for one) refuse a system turn. Check the data to see.",
    )
    eval_steps = forms.IntegerField(
        min_value=0, max_value=MAX_STEPS, initial=25, help_text="Evaluate every N steps (0: start and end)."
    )
    save_steps = forms.IntegerField(
        min_value=0, max_value=MAX_STEPS, initial=25, help_text="Checkpoint every N steps (for resume)."
    )

    def __init__(self, *args: Any, snapshots: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = snapshot_label
        self.fields["base_model"].choices = [(name, name) for name in base_models()]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        try:
            TrainConfig.from_dict(self.config(base_model="unchecked"))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data

    def effective_batch(self) -> str:
        """The pairs an optimizer step sees with the form's values (its initial ones until bound and valid),
        in words (training.config.effective_batch_words)."""
        data = getattr(self, "cleaned_data", None) or {}
        fields = self.fields
        return effective_batch_words(
            data.get("batch_size") or fields["batch_size"].initial,
            data.get("gradient_accumulation_steps") or fields["gradient_accumulation_steps"].initial,
            data.get("processes"),
        )

    def config(self, *, base_model: str) -> dict[str, Any]:
        """TrainConfig fields from the cleaned data."""
        data = self.cleaned_data
        names = ("loss_type", "beta", "learning_rate", "num_epochs", "max_steps", "batch_size",
                 "gradient_accumulation_steps", "max_length", "max_prompt_length", "lora_r", "lora_alpha",
                 "lora_dropout", "seed", "eval_steps", "save_steps", "system_turn")  # fmt: skip
        config = {name: data[name] for name in names}
        config["sft_weight"] = data.get("sft_weight") or 0.0
        config["simpo_gamma"] = 0.5 if data.get("simpo_gamma") is None else data["simpo_gamma"]
        smoothing = data.get("label_smoothing") or 0.0
        if data["loss_type"] not in ("sigmoid", "robust", "simpo"):
            smoothing = 0.0  # IPO and hinge have no label smoothing
        return {**config, "label_smoothing": smoothing, "base_model": base_model}
