"""A DPO run's settings: `TrainConfig`, JSON-safe and validated. No torch and no Django import, so the
web app validates a run's form without loading the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "simpo")
# Loss types whose formula has a label-smoothing term; the others would silently ignore it.
SMOOTHED_LOSS_TYPES = ("sigmoid", "robust", "simpo")
REFERENCE_FREE_LOSS_TYPES = ("simpo",)
SYSTEM_TURNS = ("keep", "merge")
SEED_MAX = 2**32 - 1  # transformers.set_seed seeds NumPy too, whose seeds stop here


def effective_batch_words(batch_size: int, accumulation: int, processes: int | None) -> str:
    """ "Effective batch: 16 pairs per optimizer step (4 per process × 2 processes × 2 accumulation steps)".
    `processes` None: not known yet (the worker's GPUs, 1 on a CPU), said so."""
    if processes:
        total = batch_size * processes * accumulation
        plural = ("es" if processes != 1 else "", "s" if accumulation != 1 else "")
        return (
            f"Effective batch: {total} pairs per optimizer step ({batch_size} per process × {processes} "
            f"process{plural[0]} × {accumulation} accumulation step{plural[1]})."
        )
    return (
        f"Effective batch: {batch_size * accumulation} pairs per optimizer step per process ({batch_size} × "
        f"{accumulation} accumulation steps), times the worker's GPUs (1 process on a CPU)."
    )


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one DPO run. JSON-safe through `to_dict` / `from_dict`; invalid values raise
    ValueError naming every problem."""

    base_model: str  # local folder, or a name `from_pretrained` resolves
    loss_type: str = "sigmoid"  # sigmoid (DPO; cDPO with label_smoothing), ipo, hinge, robust, simpo
    beta: float = 0.1
    label_smoothing: float = 0.0  # sigmoid, robust and simpo only
    simpo_gamma: float = 0.5  # SimPO's target margin γ
    sft_weight: float = 0.0  # weight of the chosen completions' NLL added to the loss (RPO; TRL's "sft" loss)
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    num_epochs: int = 1
    max_steps: int | None = None  # overrides num_epochs when set
    batch_size: int = 4  # pairs per process per micro-step
    gradient_accumulation_steps: int = 1
    eval_batch_size: int | None = (
        None  # pairs per batch without gradients (reference pass, eval); 2·batch_size
    )
    max_length: int = 1024  # tokens per sequence, prompt + completion
    max_prompt_length: int | None = (
        None  # keep the prompt's last tokens; None: drop (and report) what cannot fit
    )
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_steps: int = 50  # 0: evaluate at step 0 and at the end only
    save_steps: int = 50  # 0: checkpoint only on a stop
    save_total_limit: int = 2  # checkpoints kept
    gradient_checkpointing: bool = False
    # A system turn the chat template refuses: "keep" stops the run naming the row; "merge" folds it into the
    # first user turn (training.data).
    system_turn: str = "keep"

    def __post_init__(self) -> None:
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        problems = []
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type must be one of {', '.join(LOSS_TYPES)}")
        elif self.label_smoothing and self.loss_type not in SMOOTHED_LOSS_TYPES:
            problems.append(f"label_smoothing applies to {', '.join(SMOOTHED_LOSS_TYPES)} only")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append("label_smoothing must be in [0, 0.5)")
        positive = (
            "beta",
            "learning_rate",
            "num_epochs",
            "batch_size",
            "gradient_accumulation_steps",
            "max_length",
        )
        positive += ("lora_r", "lora_alpha", "max_grad_norm", "save_total_limit")
        problems += [f"{name} must be > 0" for name in positive if not getattr(self, name) > 0]
        for name in ("max_steps", "eval_batch_size", "max_prompt_length"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 or null")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            problems.append("max_prompt_length must be below max_length")
        if not (0 <= self.warmup_ratio < 1 and 0 <= self.lora_dropout < 1):
            problems.append("warmup_ratio and lora_dropout must be in [0, 1)")
        if not 0 <= self.seed <= SEED_MAX:
            problems.append(f"seed must be in [0, {SEED_MAX}]")
        if self.system_turn not in SYSTEM_TURNS:
            problems.append(f"system_turn must be one of {', '.join(SYSTEM_TURNS)}")
        if min(self.eval_steps, self.save_steps, self.weight_decay, self.sft_weight) < 0:
            problems.append("eval_steps, save_steps, weight_decay and sft_weight must be >= 0")
        if problems:
            raise ValueError("Invalid TrainConfig: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if isinstance(data["lora_target_modules"], tuple):
            data["lora_target_modules"] = list(data["lora_target_modules"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from `to_dict`'s output; raises `ValueError` naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig key(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        return cls(**data)
