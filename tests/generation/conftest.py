"""Fixtures of the generation tests: the tiny base model on the allow-list, and a succeeded run whose
adapter (random, non-zero LoRA weights) makes the tuned model answer differently from its base."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import make_snapshot
from training.models import TrainingRun
from training.services import artifact_dir


def save_random_adapter(base_dir: Path, target: Path, *, seed: int = 0) -> Path:
    """A LoRA adapter of the model in `base_dir` with random weights (peft's init_lora_weights=False)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(target)
    return target


@pytest.fixture
def tiny_base(settings, lively_model_dir):
    """The lively tiny model on the allow-list as "tiny"."""
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(lively_model_dir)}
    return "tiny"


@pytest.fixture
def tuned_run(project, admin_user, tiny_base, lively_model_dir):
    """A succeeded run on the tiny base, with an adapter in the artifact storage."""
    run = TrainingRun.objects.create(
        snapshot=make_snapshot(project), base_model=tiny_base, config={"lora_r": 4}, created_by=admin_user,
        state=TrainingRun.State.SUCCEEDED,
    )  # fmt: skip
    save_random_adapter(Path(lively_model_dir), artifact_dir(run))
    return run
