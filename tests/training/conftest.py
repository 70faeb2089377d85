"""Preference files and snapshots for the training tests (tiny model fixtures: tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from labeling.models import ExportSnapshot, Project
from prefstudio import storage
from tests.tiny_model import preference_rows
from training.config import TrainConfig


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def preference_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Conversational train (64 pairs) and eval (16 pairs) files with a learnable preference."""
    folder = tmp_path_factory.mktemp("preferences")
    train = write_jsonl(folder / "train.jsonl", preference_rows(64, seed=1))
    evaluation = write_jsonl(folder / "eval.jsonl", preference_rows(16, seed=2))
    return train, evaluation


@pytest.fixture
def config(tiny_model_dir: Path) -> TrainConfig:
    """A fast engine configuration: small LoRA, no warmup, a learning rate high enough to move in a few
    steps."""
    return TrainConfig(
        base_model=str(tiny_model_dir),
        learning_rate=1e-2,
        warmup_ratio=0.0,
        lora_r=4,
        lora_alpha=8,
        eval_steps=0,
        save_steps=0,
    )


@pytest.fixture
def tiny_base(settings, tiny_model_dir):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(tiny_model_dir)}
    return "tiny"


def make_snapshot(project: Project, *, train: int = 32, evaluation: int = 8) -> ExportSnapshot:
    """A finished conversational export whose files hold a learnable synthetic preference."""
    snapshot = ExportSnapshot.objects.create(
        project=project, rules={}, shape="conversational", format="jsonl", eval_fraction=0.2,
        state="done", train_rows=train, eval_rows=evaluation, kept=train + evaluation,
        files=[{"name": "train.jsonl", "split": "train", "rows": train},
               {"name": "eval.jsonl", "split": "eval", "rows": evaluation}],
    )  # fmt: skip
    for name, rows in (
        ("train.jsonl", preference_rows(train, seed=1)),
        ("eval.jsonl", preference_rows(evaluation, seed=2)),
    ):  # through the storage API: a folder under MEDIA_ROOT, or the bucket of the `s3` fixture
        text = "".join(json.dumps(r) + "\n" for r in rows)
        storage.media().save(f"{snapshot.directory}/{name}", ContentFile(text.encode()))
    return snapshot
