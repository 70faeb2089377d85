"""The data check before a run (New run form, htmx or a plain post, and `python -m training.engine --check`),
the refusal of a run that would train on nothing, and the run page's honest before/after and Data section."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.tiny_model import NO_SYSTEM_TEMPLATE, tokenizer_variant
from tests.training.conftest import make_snapshot, write_jsonl
from training import services
from training.compare import share_change
from training.data import DataReport
from training.engine import main
from training.models import TrainingRun

FORM = {"base_model": "tiny", "loss_type": "sigmoid", "beta": "0.1", "learning_rate": "5e-5",
        "num_epochs": "1", "max_steps": "2", "batch_size": "2", "gradient_accumulation_steps": "1",
        "max_length": "96", "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "seed": "1",
        "eval_steps": "0", "save_steps": "0", "system_turn": "keep"}  # fmt: skip


def _row(pair_id: str, chosen: str, rejected: str) -> dict:
    def say(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    return {"id": pair_id, "prompt": [{"role": "user", "content": "Sky?"}], "chosen": say(chosen),
            "rejected": say(rejected)}  # fmt: skip


@pytest.fixture
def admin_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
def test_check_the_data_shows_reasons_lengths_and_tokens_and_queues_nothing(
    tiny_base, project, admin_client
) -> None:
    snapshot = make_snapshot(project)
    data = {**FORM, "snapshot": str(snapshot.uuid), "max_length": "40", "action": "check"}
    response = admin_client.post("/training/runs/new/", data, headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200 and page.lstrip().startswith('<section id="data-check"')  # the partial
    assert "Train: 32 of 32 pairs kept" in page and "Eval: 8 of 8 pairs kept" in page
    assert "completion_truncated" in page and "<svg" in page and "tok-special" in page and "tok-cut" in page
    assert "Every split keeps pairs to train on" in page
    assert not TrainingRun.objects.exists()
    # Without JavaScript the same button posts the form and gets the whole page back with the check in it.
    whole = admin_client.post("/training/runs/new/", data).content.decode()
    assert "<h1>New DPO run</h1>" in whole and "Train: 32 of 32 pairs kept" in whole
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_a_run_whose_check_drops_every_pair_is_not_queued(tiny_base, project, admin_client) -> None:
    snapshot = make_snapshot(project)
    data = {**FORM, "snapshot": str(snapshot.uuid), "max_length": "16"}  # shorter than every prompt
    check = admin_client.post(
        "/training/runs/new/", {**data, "action": "check"}, headers={"HX-Request": "true"}
    )
    assert "train: every pair would be dropped (32 prompt_too_long)." in check.content.decode()
    response = admin_client.post("/training/runs/new/", {**data, "action": "queue"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Not queued: the data check finds nothing to train on." in page and "32 prompt_too_long" in page
    assert not TrainingRun.objects.exists()
    # The same settings with room for the prompts are queued.
    response = admin_client.post("/training/runs/new/", {**data, "max_length": "96", "action": "queue"})
    assert response.status_code == 302 and TrainingRun.objects.count() == 1


@pytest.mark.django_db
def test_a_template_error_is_shown_by_the_check_naming_the_row(
    tiny_model_dir, project, admin_client, settings, tmp_path
) -> None:
    model = tmp_path / "gemma-like"
    tokenizer_variant(tiny_model_dir, model, chat_template=NO_SYSTEM_TEMPLATE)
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(model)}
    snapshot = make_snapshot(project)  # its rows carry a system turn
    data = {**FORM, "snapshot": str(snapshot.uuid), "action": "check"}
    page = admin_client.post("/training/runs/new/", data, headers={"HX-Request": "true"}).content.decode()
    assert "train.jsonl row 1 (id s1-0): the chat template refused it" in page
    assert "System role not supported" in page and "Traceback" not in page
    merged = admin_client.post(
        "/training/runs/new/", {**data, "system_turn": "merge"}, headers={"HX-Request": "true"}
    )
    assert "system_merged" in merged.content.decode() and "Every split keeps pairs" in merged.content.decode()


def test_check_from_the_command_line(tiny_model_dir, tmp_path: Path, capsys) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl", [_row("kept", "Bright.", "Dull."), _row("same", "Bright.", "Bright.")]
    )
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"train_file": str(train), "base_model": str(tiny_model_dir), "max_length": 64})
    )
    assert main([str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert "train: 1 of 2 pairs kept, 1 dropped" in out and "dropped 1 identical_after_template" in out
    assert "⟨<|im_start|>⟩" in out and "Usable: every split keeps pairs to train on." in out
    assert main([str(config), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["dropped"] == {
        "identical_after_template": ["same"]
    }
    config.write_text(
        json.dumps({"train_file": str(train), "base_model": str(tiny_model_dir), "max_length": 10})
    )
    assert main([str(config), "--check"]) == 4  # nothing to train on
    assert "Not usable:" in capsys.readouterr().out


@pytest.mark.django_db
def test_the_run_page_and_list_say_the_change_honestly(tiny_base, project, admin_client) -> None:
    flat = share_change([True] + [False] * 5, [True] + [False] * 5).to_dict()
    better = share_change([False] * 30 + [True] * 10, [True] * 36 + [False] * 4).to_dict()
    stored = DataReport(file="train.jsonl", sha256="ab" * 32, total=3, kept=2)
    stored.drop("identical_after_template", "p3")
    stored.change("template_rewrote_completion", "p1")
    report = stored.to_dict()
    metrics0 = {"rewards/accuracies": 0.0, "rewards/margins": 0.0, "logps/preference_share": 0.1667}
    final = {**metrics0, "rewards/accuracies": 0.33}
    runs = [
        TrainingRun.objects.create(
            snapshot=make_snapshot(project), base_model="tiny", config={"loss_type": "sigmoid"},
            state="succeeded", share_change=outcome, data_report={"train": report},
            initial_metrics=metrics0, final_metrics=final,
        )
        for outcome in (flat, better)
    ]  # fmt: skip
    listing = admin_client.get("/training/").content.decode()
    assert "0.17 → 0.17" in listing and "no measurable change" in listing
    assert "0.25 → 0.90" in listing and "+0.65" in listing and "0.33" in listing
    page = admin_client.get(runs[0].get_absolute_url()).content.decode()
    assert "No measurable change: held-out preference share 0.17 → 0.17" in page
    assert "zero by construction at step 0" in page  # the step-0 reward accuracy is not shown as a baseline
    assert "identical_after_template" in page and "template_rewrote_completion" in page and "p3" in page
    # The engine's own report (every id) is what the download gives, where it is on disk.
    folder = services.artifact_dir(runs[0])
    folder.mkdir(parents=True)
    ids = [f"p{i}" for i in range(99)] + ['=HYPERLINK("http://evil.example")']  # ids come from imported files
    full = {"train": {**report, "dropped": {"identical_after_template": ids}}}
    (folder / "data_report.json").write_text(json.dumps(full))
    response = admin_client.get(f"/training/runs/{runs[0].pk}/pairs.csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["split", "kind", "reason", "id"] and len(rows) == 1 + 100 + 1
    assert rows[1] == ["train", "dropped", "identical_after_template", "p0"]
    assert rows[100][3] == '\'=HYPERLINK("http://evil.example")'  # shown as text, never run as a formula
    assert admin_client.get(f"/training/runs/{runs[1].pk}/pairs.csv").status_code == 200  # the stored report
    assert settings.MEDIA_ROOT  # the snapshots above live there
