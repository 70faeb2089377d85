"""Preference files for the engine tests (the tiny model fixtures are in tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import preference_rows


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
