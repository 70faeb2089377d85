"""Exports from the database: the preview's counts, immutable snapshots with their files and lineage,
the pages and their permissions, the worker path, TRL's loaders and checks, the command, a round trip
through the importer, and the Dawid–Skene rule."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.test import Client
from rq import SimpleWorker

from labeling import agreement, consensus, exporting, review
from labeling.batches import import_stream
from labeling.forms import ExportForm
from labeling.models import Adjudication, ExportSnapshot, ImportBatch, Judgment, Membership, Pair, Project
from labeling.snapshots import (
    SnapshotInUse,
    export_preview,
    rules_for,
    snapshot_build,
    snapshot_delete,
    snapshot_start,
)
from tests.conftest import worker_for
from tests.labeling.boards import LAYOUT, Board, build_pairs, make_board, raters, vote

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
TRL_COLUMNS = {
    "standard": ["prompt", "chosen", "rejected"],
    "conversational": ["prompt", "chosen", "rejected"],
    "unpaired": ["prompt", "completion", "label"],
    "unpaired-conversational": ["prompt", "completion", "label"],
}


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """Users here sign in with force_login: hashing their passwords would only cost time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def board(project, lead, make_user) -> Board:
    return make_board(project, lead, make_user)


@pytest.fixture
def lead_client(lead) -> Client:
    client = Client()
    client.force_login(lead)
    return client


def form_data(project: Project, **values: Any) -> dict[str, Any]:
    """The export form as the page submits it: its defaults (checkboxes only when on), an eval fraction
    of 0.5 (both files get rows), then `values` (None leaves a field out)."""
    data = {**ExportForm.initial_data(project), "eval_fraction": 0.5, "action": "create", **values}
    return {k: v for k, v in data.items() if v is not None}


def decisions(board: Board, rules: consensus.ConsensusRules) -> dict[int, consensus.Decision]:
    """The pure rules on LAYOUT's votes: pair index -> Decision (adjudications from the database)."""
    adjudicated = dict(Adjudication.objects.values_list("pair_id", "label"))
    return {
        i: consensus.decide(
            list(votes.values()), rules=rules, adjudication=adjudicated.get(pair.pk), is_gold=bool(gold)
        )
        for i, (pair, (_, gold, votes)) in enumerate(zip(board.pairs, LAYOUT, strict=True))
    }


def files_of(snapshot: ExportSnapshot) -> dict[str, Path]:
    root = Path(settings.MEDIA_ROOT) / snapshot.directory
    return {info["split"]: root / info["name"] for info in snapshot.files}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A file's rows; Parquet's JSON columns (meta.criteria, meta.metadata) decoded, as `datasets` does."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    from tests.labeling.test_exporting import read_parquet

    return read_parquet(path)


def create(client: Client, board: Board, **values: Any) -> ExportSnapshot:
    response = client.post(board.url("export-create"), form_data(board.project, **values))
    assert response.status_code == 302, response.content.decode()[:2000]
    snapshot = ExportSnapshot.objects.get(uuid=response["Location"].rstrip("/").split("/")[-1])
    assert response["Location"] == snapshot.get_absolute_url()
    return snapshot


# The preview


def test_the_preview_counts_pairs_by_reason(board):
    rules = rules_for(board.project)
    preview = export_preview(board.project, rules=rules, shape="standard")
    assert (preview.pairs, preview.kept, preview.judgments) == (11, 3, 28)
    expected = {"split": 2, "tie": 1, "both_bad": 1, "too_few_votes": 3, "chat_prompt": 1}
    assert preview.dropped == expected
    # The same from the pure functions on the layout's votes.
    by_pair = decisions(board, rules)
    flat = [not isinstance(prompt, list) for prompt, _, _ in LAYOUT]
    reasons = [
        exporting.drop_reason(d, shape="standard", flat_prompt=f)
        for d, f in zip(by_pair.values(), flat, strict=True)
    ]
    assert {r: reasons.count(r) for r in set(reasons) - {None}} == preview.dropped
    assert preview.disagreement == consensus.measure_disagreement(by_pair.values())
    assert preview.disagreement.non_unanimous == pytest.approx(2 / 4)  # pairs 1 and 6 of 0, 1, 6, 7
    assert [row["id"] for row in preview.samples] == ["p0", "p1", "p6"]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_preview_reads_its_two_queries_at_once_and_counts_the_same(board):
    """A request runs the preview outside a transaction: the vote counts come over a second connection
    (labeling.snapshots._both) while the pairs come over this one, with the same result."""
    from django.db import connection

    assert not connection.in_atomic_block
    rules = rules_for(board.project)
    preview = export_preview(board.project, rules=rules, shape="standard")
    assert (preview.pairs, preview.kept, preview.judgments) == (11, 3, 28)
    assert preview.dropped == {"split": 2, "tie": 1, "both_bad": 1, "too_few_votes": 3, "chat_prompt": 1}
    assert [row["id"] for row in preview.samples] == ["p0", "p1", "p6"]

    conversational = export_preview(board.project, rules=rules, shape="conversational")
    assert conversational.kept == 4 and "chat_prompt" not in conversational.dropped
    assert conversational.samples[-1]["prompt"] == LAYOUT[7][0]
    gold = export_preview(board.project, rules=rules_for(board.project, drop_gold=True), shape="standard")
    assert (gold.kept, gold.dropped["gold"]) == (2, 1)
    both_bad = export_preview(
        board.project, rules=rules_for(board.project, drop_both_bad=False), shape="unpaired"
    )
    assert both_bad.kept == 4 and "both_bad" not in both_bad.dropped  # 0, 1, 6 and both-bad 4
    review.pair_adjudicate(pair=board.pairs[8], label="b", note="", user=board.lead)
    adjudicated = export_preview(board.project, rules=rules, shape="standard")
    assert adjudicated.kept == 4 and adjudicated.dropped["too_few_votes"] == 2


def test_the_preview_updates_in_place(board, lead_client):
    response = lead_client.post(
        board.url("export-create"), form_data(board.project, shape="conversational"), **HX
    )
    body = response.content.decode().strip()
    assert response.status_code == 200
    assert body.startswith('<section id="export-preview"') and body.endswith("</section>")
    assert "<dt>Kept</dt><dd>4</dd>" in body and "Create snapshot" not in body
    assert not ExportSnapshot.objects.exists()
    # htmx swaps only 2xx responses: a bad rule gives 200 and says so in the preview.
    response = lead_client.post(board.url("export-create"), form_data(board.project, min_share=7), **HX)
    assert response.status_code == 200 and "Fix the rules" in response.content.decode()
    response = lead_client.post(board.url("export-create"), form_data(board.project, min_share=7))
    assert response.status_code == 400
    assert (
        "Minimum share: 7 is outside 0 to 1: write a share such as 2/3 or 0.667" in response.content.decode()
    )
    page = lead_client.post(
        board.url("export-create"), form_data(board.project, action="preview")
    ).content.decode()
    assert "<dt>Kept</dt><dd>3</dd>" in page and "Create snapshot" in page
    assert not ExportSnapshot.objects.exists()


# Snapshots


def test_a_snapshot_writes_its_files_and_records_what_they_hold(board, lead_client):
    Membership.objects.filter(user=board.raters[3]).update(excluded=True)
    rules = rules_for(board.project)
    preview = export_preview(board.project, rules=rules, shape="standard")
    snapshot = create(lead_client, board, eval_fraction=0.3)  # p0 and p9 to eval, p6 to train
    assert snapshot.state == "done", snapshot.message
    assert snapshot.created_by == board.lead and snapshot.finished_at
    assert snapshot.rules == asdict(rules)
    assert (snapshot.shape, snapshot.format, snapshot.eval_fraction) == ("standard", "jsonl", 0.3)
    assert (snapshot.pairs_total, snapshot.pairs_done) == (11, 11)
    # Annotator 3 left out: pair 1 has too few votes and pair 9 is kept (B, 2 of 3).
    assert snapshot.kept == preview.kept == 3
    assert snapshot.dropped == preview.dropped == {
        "split": 1, "tie": 1, "both_bad": 1, "too_few_votes": 4, "chat_prompt": 1,
    }  # fmt: skip
    assert snapshot.judgments == preview.judgments == 26
    assert snapshot.excluded_annotators == [board.raters[3].pk]
    counted = Judgment.objects.exclude(annotator=board.raters[3])
    assert snapshot.last_judgment_at == counted.latest("created_at").created_at
    # Pairs 6 and 9 of 0, 6, 7 and 9 (the chat pair is kept by the rules, though not in this shape).
    assert snapshot.disagreement == pytest.approx(preview.disagreement.non_unanimous) == 0.5
    assert snapshot.label_noise == pytest.approx(preview.label_noise)
    assert snapshot.suggested_label_smoothing == preview.suggested_label_smoothing

    ids = set()
    for split, path in files_of(snapshot).items():
        info = next(f for f in snapshot.files if f["split"] == split)
        data = path.read_bytes()
        assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["bytes"] == len(data)
        assert stat.S_IMODE(path.stat().st_mode) == 0o444  # read-only
        rows = read_rows(path)
        assert len(rows) == info["rows"] == (snapshot.train_rows if split == "train" else snapshot.eval_rows)
        assert all(exporting.split_of(row["id"], 0.3) == split for row in rows)
        ids |= {row["id"] for row in rows}
    assert ids == {"p0", "p6", "p9"}
    assert (snapshot.train_rows, snapshot.eval_rows) == (1, 2)

    page = lead_client.get(snapshot.get_absolute_url()).content.decode()
    for info in snapshot.files:
        assert info["sha256"] in page and board.url("export-download", snapshot.uuid, info["name"]) in page
    assert snapshot.get_absolute_url() in lead_client.get(board.url("export")).content.decode()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_rows_carry_the_votes_models_and_criteria(project, lead, make_user, fmt):
    project.criteria = [{"name": "Tone", "question": "Which is kinder?"}, {"name": "a__b", "question": "?"}]
    project.save()
    users = raters(make_user, project, 3)
    (pair,) = build_pairs(project, [("Q", "", {0: "b", 1: "b", 2: "a"})], users)
    Pair.objects.filter(pk=pair.pk).update(model_a="m-a", model_b="m-b", metadata={"source": "arena", "n": 2})
    Judgment.objects.filter(annotator__in=users[:2]).update(criteria={"Tone": "b", "a__b": "tie"})
    Judgment.objects.filter(annotator=users[2]).update(criteria={"Tone": "a"})
    snapshot = snapshot_start(
        project=project, user=lead, rules=rules_for(project), shape="standard", fmt=fmt, eval_fraction=0
    )
    (row,) = read_rows(files_of(snapshot)["train"])
    assert list(row) == ["id", "prompt", "chosen", "rejected", "meta"]
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Q", "A longer answer B0", "Answer A0")
    meta = row["meta"]
    assert meta["models"] == {"chosen": "m-b", "rejected": "m-a"}
    assert meta["votes"] == {"a": 1, "b": 2, "tie": 0, "both_bad": 0} and meta["label"] == "b"
    assert meta["share"] == pytest.approx(2 / 3) and meta["adjudicated"] is False
    assert meta["criteria"] == {
        "Tone": {"a": 1, "b": 2, "tie": 0}, "a__b": {"a": 0, "b": 0, "tie": 2},
    }  # fmt: skip
    assert meta["metadata"] == {"source": "arena", "n": 2}
    if fmt == "jsonl":  # objects in the line, never JSON text in a string
        line = files_of(snapshot)["train"].read_text()
        assert '"criteria":{"Tone":{' in line and '"metadata":{' in line and '\\"' not in line
    # The preview shows the same row, criteria counts included.
    [sample] = export_preview(project, rules=rules_for(project), shape="standard", fmt=fmt).samples
    assert sample == row


def test_a_snapshot_is_never_rewritten(board, lead_client):
    snapshot = create(lead_client, board)
    before = model_to_dict(snapshot)
    contents = {split: path.read_bytes() for split, path in files_of(snapshot).items()}
    times = {split: path.stat().st_mtime_ns for split, path in files_of(snapshot).items()}
    vote(board.pairs[5], board.raters[1], "a")  # the project moves on
    snapshot_build(snapshot)  # a second build of a done snapshot does nothing
    for url in (snapshot.get_absolute_url(), board.url("export-download", snapshot.uuid, "train.jsonl")):
        assert lead_client.post(url, {"state": "queued", "kept": 0}).status_code == 405
    snapshot.refresh_from_db()
    assert model_to_dict(snapshot) == before
    assert {s: p.read_bytes() for s, p in files_of(snapshot).items()} == contents
    assert {s: p.stat().st_mtime_ns for s, p in files_of(snapshot).items()} == times
    from django.contrib import admin

    assert not admin.site.is_registered(ExportSnapshot)


def test_a_snapshot_a_training_run_used_cannot_be_deleted(board, lead_client):
    from training.models import TrainingRun

    used, unused = create(lead_client, board), create(lead_client, board, format="parquet")
    TrainingRun.objects.create(snapshot=used, base_model="tiny", config={})
    with pytest.raises(SnapshotInUse, match="1 training run used this snapshot"):
        snapshot_delete(used)
    response = lead_client.post(board.url("export-delete", used.uuid))
    assert response.status_code == 302 and response["Location"] == used.get_absolute_url()
    assert "1 training run used this snapshot" in lead_client.get(response["Location"]).content.decode()
    assert ExportSnapshot.objects.filter(pk=used.pk).exists()
    assert all(path.is_file() for path in files_of(used).values())

    paths = files_of(unused)
    response = lead_client.post(board.url("export-delete", unused.uuid))
    assert response.status_code == 302 and response["Location"] == board.url("export")
    assert not ExportSnapshot.objects.filter(pk=unused.pk).exists()
    assert not any(path.exists() for path in paths.values())
    assert not (Path(settings.MEDIA_ROOT) / unused.directory).exists()


def test_annotators_get_403_and_foreign_leads_404(board, lead_client, annotator, make_user, other_project):
    snapshot = create(lead_client, board)
    stranger = make_user("otto", "lead")
    Membership.objects.create(project=other_project, user=stranger, role=Membership.Role.LEAD)
    urls = [
        ("get", board.url("export")),
        ("post", board.url("export-create")),
        ("get", board.url("export-detail", snapshot.uuid)),
        ("get", board.url("export-download", snapshot.uuid, "train.jsonl")),
        ("post", board.url("export-delete", snapshot.uuid)),
    ]
    for user, status in ((annotator, 403), (stranger, 404)):
        client = Client()
        client.force_login(user)
        for method, url in urls:
            response = client.post(url, form_data(board.project)) if method == "post" else client.get(url)
            assert response.status_code == status, (user.username, url)
    assert list(ExportSnapshot.objects.all()) == [snapshot]
    assert all(path.is_file() for path in files_of(snapshot).values())


def test_a_download_is_an_attachment(board, lead_client):
    snapshot = create(lead_client, board)
    path = files_of(snapshot)["train"]
    response = lead_client.get(board.url("export-download", snapshot.uuid, "train.jsonl"))
    assert response.status_code == 200
    filename = f"alpha-{str(snapshot.uuid)[:8]}-train.jsonl"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == path.read_bytes()
    assert lead_client.get(board.url("export-download", snapshot.uuid, "other.jsonl")).status_code == 404


def test_a_large_export_runs_in_a_worker_and_the_poll_stops(
    board, lead_client, settings, django_capture_on_commit_callbacks
):
    settings.PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS = 1
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues on commit
        snapshot = create(lead_client, board, format="parquet")
    assert snapshot.state == "queued" and snapshot.job_id
    poll = lead_client.get(snapshot.get_absolute_url(), **HX)
    assert poll.status_code == 200 and 'hx-trigger="every 1s"' in poll.content.decode()
    assert poll.content.decode().strip().startswith('<section id="export-status"')
    # In-process worker: the job must see this test's uncommitted rows (SQLite and PostgreSQL alike).
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    snapshot.refresh_from_db()
    assert snapshot.state == "done" and (snapshot.pairs_done, snapshot.kept) == (11, 3)
    poll = lead_client.get(snapshot.get_absolute_url(), **HX)
    assert poll.status_code == 286 and poll["HX-Refresh"] == "true"  # htmx stops polling
    body = poll.content.decode().strip()
    assert body.startswith('<section id="export-status"') and "every 1s" not in body
    assert sum(len(read_rows(path)) for path in files_of(snapshot).values()) == 3


def test_a_snapshot_whose_job_is_lost_fails_and_the_poll_stops(board, lead_client):
    snapshot = create(lead_client, board)
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(state="running", job_id="no-such-job", files=[])
    poll = lead_client.get(snapshot.get_absolute_url(), **HX)
    assert poll.status_code == 286 and "disappeared from the queue" in poll.content.decode()
    snapshot.refresh_from_db()
    assert snapshot.state == "failed" and snapshot.finished_at
    assert not (Path(settings.MEDIA_ROOT) / snapshot.directory).exists()


# The files in TRL's tools


def tiny_chat_tokenizer():
    """A word-level tokenizer with a ChatML template: enough for apply_chat_template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        chat_template=(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        ),
    )


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_files_load_with_datasets_and_pass_trls_checks(board, lead_client, fmt, tmp_path):
    import datasets
    from trl.data_utils import apply_chat_template, is_conversational, maybe_extract_prompt

    review.pair_adjudicate(pair=board.pairs[3], label="both_bad", note="", user=board.lead)
    tokenizer = tiny_chat_tokenizer()
    loader = "json" if fmt == "jsonl" else "parquet"
    for shape in ("standard", "conversational", "unpaired-conversational"):
        snapshot = create(lead_client, board, shape=shape, format=fmt, keep_both_bad="on", eval_fraction=0)
        assert snapshot.state == "done", snapshot.message
        data = datasets.load_dataset(
            loader, data_files={"train": str(files_of(snapshot)["train"])}, cache_dir=str(tmp_path / "hf")
        )["train"]
        assert data.column_names == ["id", *TRL_COLUMNS[shape], "meta"]
        assert data.num_rows == snapshot.train_rows
        conversational = shape != "standard"
        for row in data:
            assert is_conversational(row) is conversational
            assert maybe_extract_prompt(row) is row  # the prompt is explicit
            if not conversational:
                assert all(isinstance(row[key], str) for key in TRL_COLUMNS[shape])
                continue
            text = apply_chat_template({k: row[k] for k in TRL_COLUMNS[shape]}, tokenizer)
            assert text["prompt"].endswith("<|im_start|>assistant\n")
            replies = ["completion"] if shape.startswith("unpaired") else ["chosen", "rejected"]
            for key in replies:
                assert text[key] == f"{row[key][0]['content']}<|im_end|>\n"
            assert tokenizer.apply_chat_template(row["prompt"] + row[replies[0]], tokenize=True)
        if shape == "conversational":
            assert data.num_rows == 4 and LAYOUT[7][0] in list(data["prompt"])  # the chat pair, as messages
        if shape.startswith("unpaired"):
            # Pairs 0, 1, 6, 7 give a desirable and an undesirable row; both-bad 3 and 4 two undesirable.
            assert data.num_rows == 12 and sum(data["label"]) == 4


# The command


def test_export_pairs_writes_the_same_snapshot_and_copies_its_files(board, lead, tmp_path):
    reference = snapshot_start(
        project=board.project, user=lead, rules=rules_for(board.project), shape="standard", fmt="parquet",
        eval_fraction=0.5,
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    options = ["--out", str(tmp_path / "out"), "--format", "parquet", "--eval-fraction", "0.5"]
    call_command("export_pairs", "alpha", *options, stdout=out, stderr=err)
    snapshot = ExportSnapshot.objects.exclude(pk=reference.pk).get()
    assert snapshot.state == "done" and snapshot.created_by is None
    assert snapshot.rules == reference.rules and snapshot.dropped == reference.dropped
    assert [f["sha256"] for f in snapshot.files] == [f["sha256"] for f in reference.files]
    text = out.getvalue()
    assert f"Snapshot {snapshot.uuid}: 3 of 11 pairs kept" in text
    for info in snapshot.files:
        copy = tmp_path / "out" / info["name"]
        assert f"{copy}  {info['rows']} rows  sha256 {info['sha256']}" in text
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == info["sha256"]
    assert "suggested cDPO label_smoothing" in text


def test_export_pairs_refuses_bad_input(board, tmp_path):
    out = ["--out", str(tmp_path)]
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("export_pairs", "nope", *out)
    with pytest.raises(CommandError, match="--eval-fraction"):
        call_command("export_pairs", "alpha", *out, "--eval-fraction", "1.5")
    with pytest.raises(CommandError, match="Invalid rule: min_share: 2 is outside 0 to 1"):
        call_command("export_pairs", "alpha", *out, "--min-share", "2")
    with pytest.raises(CommandError, match="Invalid rule: min_share: 'two thirds' is not a share"):
        call_command("export_pairs", "alpha", *out, "--min-share", "two thirds")
    assert not ExportSnapshot.objects.exists()


# A round trip


def test_an_export_reimported_gives_the_same_pairs(board, lead_client):
    review.pair_adjudicate(pair=board.pairs[8], label="b", note="", user=board.lead)
    snapshot = create(lead_client, board, eval_fraction=0)
    (path,) = files_of(snapshot).values()
    exported = read_rows(path)
    again = Project.objects.create(slug="again", name="Again")
    batch = ImportBatch.objects.create(project=again, source_name=path.name, size_bytes=path.stat().st_size)
    with path.open("rb") as stream:
        summary = import_stream(batch=batch, stream=stream, fmt="jsonl")
    assert (summary.imported, summary.rejected) == (len(exported), 0) == (4, 0)

    def unordered(pairs) -> set[tuple[str, frozenset[str]]]:
        return {(p.prompt, frozenset((p.response_a, p.response_b))) for p in pairs}

    kept = [board.pairs[i] for i in (0, 1, 6, 8)]
    assert unordered(again.pairs.all()) == unordered(kept)
    for pair in again.pairs.all():
        row = next(r for r in exported if r["prompt"] == pair.prompt)
        chosen = pair.response_a if pair.original_label == "a" else pair.response_b
        assert (pair.external_id, chosen) == (row["id"], row["chosen"])


def reimport(path: Path, fmt: str) -> tuple[Project, Any]:
    """The file imported into a new project through the importer people use."""
    again = Project.objects.create(slug=f"again-{fmt}", name="Again")
    batch = ImportBatch.objects.create(project=again, source_name=path.name, size_bytes=path.stat().st_size)
    with path.open("rb") as stream:
        return again, import_stream(batch=batch, stream=stream, fmt=fmt)


def chosen_by_hash(pairs, side_of) -> dict[str, str]:
    """content hash -> the preferred response (as compared), for pairs and which side each prefers."""
    from labeling.conversations import content_hash, response_key

    return {
        content_hash(p.prompt, p.response_a, p.response_b): response_key(
            p.response_a if side_of(p) == "a" else p.response_b
        )
        for p in pairs
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_hosted_shape_previews_exports_and_imports_back_as_the_same_pairs(board, lead_client, fmt):
    from training.services import TRAINABLE_SHAPES

    hosted = ExportSnapshot.Shape.OPENAI_PREFERENCE
    assert hosted == exporting.HOSTED and hosted not in TRAINABLE_SHAPES  # for hosted services, not ours
    response = lead_client.post(board.url("export-create"), form_data(board.project, shape=hosted), **HX)
    body = response.content.decode().strip()
    assert response.status_code == 200 and body.startswith('<section id="export-preview"')
    assert "<dt>Kept</dt><dd>4</dd>" in body  # the chat pair too: its messages go in whole
    assert "hosted services take these three keys only" in body
    shown = [
        json.loads(html.unescape(text))
        for text in re.findall(r'<pre class="sample-row"[^>]*>(.*?)</pre>', body, re.S)
    ]
    assert [list(row) for row in shown] == [["input", "preferred_output", "non_preferred_output"]] * 4

    snapshot = create(lead_client, board, shape=hosted, format=fmt, eval_fraction=0)
    assert (snapshot.state, snapshot.kept, snapshot.train_rows) == ("done", 4, 4), snapshot.message
    (path,) = files_of(snapshot).values()
    rows = read_rows(path)
    assert rows == shown and all(
        list(row) == ["input", "preferred_output", "non_preferred_output"] for row in rows
    )
    page = lead_client.get(snapshot.get_absolute_url()).content.decode()
    assert "Hosted preference fine-tuning" in page and "Pair metadata in meta" not in page

    again, summary = reimport(path, fmt)
    assert (summary.imported, summary.rejected) == (4, 0)
    kept = [board.pairs[i] for i in (0, 1, 6, 7)]
    by_votes = {0: "a", 1: "a", 6: "a", 7: "b"}
    expected = chosen_by_hash(kept, lambda p: by_votes[board.pairs.index(p)])
    assert chosen_by_hash(again.pairs.all(), lambda p: p.original_label) == expected


def test_the_preview_shows_rows_as_json_in_file_order_with_chips_and_reasons_in_words(board, lead_client):
    data = form_data(board.project, shape="unpaired", keep_both_bad="on")
    response = lead_client.post(board.url("export-create"), data, **HX)
    body = response.content.decode().strip()
    assert response.status_code == 200 and body.startswith('<section id="export-preview"')
    preview = export_preview(
        board.project, rules=rules_for(board.project, drop_both_bad=False), shape="unpaired"
    )
    texts = [html.unescape(t) for t in re.findall(r'<pre class="sample-row"[^>]*>(.*?)</pre>', body, re.S)]
    assert [json.loads(text) for text in texts] == preview.samples and len(texts) == 5
    for text in texts:
        assert list(json.loads(text)) == ["id", "prompt", "completion", "label", "meta"]
        assert text.splitlines()[1].startswith('  "id": ')  # one key a line, in the file's order
    assert "{'" not in html.unescape(body)  # no Python dicts
    # Vote chips in words, above each row: pairs 0 and 1 give two rows each, then both-bad pair 4.
    chips = re.findall(r'<span class="badge choice-[a-z_]+">([^<]*)</span>', body)
    assert chips.count("Both bad 3") == 1 and "A is better 3" in chips and "B is better 1" in chips
    assert all(re.fullmatch(r"(A is better|B is better|Tie|Both bad) \d+", chip) for chip in chips)
    # Drop reasons in words, never their codes.
    assert "Fewer judgments than the minimum" in body and "Judged a tie" in body
    assert not [code for code in consensus.REASONS if f">{code}<" in body or f">{code} " in body]


def test_the_preview_escapes_what_the_rows_hold(board, lead_client):
    payload = '</pre><script>alert(1)</script><img src=x onerror="alert(2)">'
    Pair.objects.filter(pk=board.pairs[0].pk).update(prompt=payload, metadata={"note": payload})
    body = lead_client.post(board.url("export-create"), form_data(board.project), **HX).content.decode()
    assert "<script>" not in body and "<img" not in body and "&lt;script&gt;alert(1)" in body
    [first, *_] = re.findall(r'<pre class="sample-row"[^>]*>(.*?)</pre>', body, re.S)
    row = json.loads(html.unescape(first))
    assert row["prompt"] == payload and row["meta"]["metadata"] == {"note": payload}


def test_min_share_is_shown_as_written_and_reasons_in_words_on_the_snapshot(board, lead_client):
    page = lead_client.get(board.url("export")).content.decode()
    assert re.search(r'<input[^>]*name="min_share"[^>]*value="2/3"', page)
    written = lead_client.post(
        board.url("export-create"), form_data(board.project, min_share="0.667", action="preview")
    )
    assert re.search(r'<input[^>]*name="min_share"[^>]*value="0.667"', written.content.decode())

    default = create(lead_client, board)
    strict = create(lead_client, board, min_share="0.667")  # above 2/3: pairs won 2 to 1 are dropped
    assert (default.min_share_text, default.rules["min_share"], default.kept) == ("2/3", 2 / 3, 3)
    assert (strict.min_share_text, strict.rules["min_share"], strict.kept) == ("0.667", 0.667, 1)
    for snapshot, shown in ((default, "2/3"), (strict, "0.667")):
        page = lead_client.get(snapshot.get_absolute_url()).content.decode()
        assert f"<dt>Minimum share</dt><dd>{shown}</dd>" in page
        assert (
            "<dt>Ties</dt><dd>dropped</dd>" in page
            and "<dt>Pair metadata in meta</dt><dd>included</dd>" in page
        )
        assert (
            "Split vote: no label reaches the minimum share" in page
            and "Fewer judgments than the minimum" in page
        )
        assert "<code>split</code>" not in page and "too_few_votes<" not in page and "drop_ties" not in page


def test_pair_metadata_goes_into_meta_only_when_the_export_says_so_and_the_preview_sizes_the_rows(
    project, lead, lead_client, make_user
):
    users = raters(make_user, project, 3)
    layout = [(f"Question {i}?", "", {0: "a", 1: "a", 2: "b"}) for i in range(6)]
    pairs = build_pairs(project, layout, users)
    tokens = list(range(2000))  # token ids, as some datasets carry: about 10 KB of JSON
    Pair.objects.filter(pk=pairs[2].pk).update(metadata={"input_ids": tokens})
    Pair.objects.filter(pk__in=[p.pk for p in pairs[3:]]).update(metadata={"source": "arena"})
    board = Board(project, pairs, users, lead)

    with_metadata = create(lead_client, board, eval_fraction=0)
    without = create(lead_client, board, eval_fraction=0, include_metadata=None)  # the box unticked
    assert (with_metadata.include_metadata, without.include_metadata) == (True, False)
    (path,) = files_of(with_metadata).values()
    rows = read_rows(path)
    assert rows[2]["meta"]["metadata"] == {"input_ids": tokens} and rows[3]["meta"]["metadata"] == {
        "source": "arena"
    }
    assert '"metadata":{"input_ids": [0, 1, 2' in path.read_text()  # an object, not JSON text in a string
    assert all("metadata" not in row["meta"] for row in read_rows(files_of(without)["train"]))
    page = lead_client.get(without.get_absolute_url()).content.decode()
    assert "<dt>Pair metadata in meta</dt><dd>left out</dd>" in page

    # The preview's sizes against the rows as written: the mean and the largest, within a few percent.
    preview = export_preview(project, rules=rules_for(project), shape="standard")
    lines = [len(line) + 1 for line in path.read_bytes().splitlines()]
    assert preview.row_sizes.mean == pytest.approx(sum(lines) / len(lines), rel=0.05)
    assert preview.row_sizes.largest == pytest.approx(max(lines), rel=0.05) and max(lines) > 8000
    assert preview.row_sizes.metadata_mean > 1000
    lean = export_preview(project, rules=rules_for(project), shape="standard", include_metadata=False)
    lean_lines = [len(line) + 1 for line in files_of(without)["train"].read_bytes().splitlines()]
    assert lean.row_sizes.largest == pytest.approx(max(lean_lines), rel=0.05) and max(lean_lines) < 500
    assert lean.row_sizes.metadata_mean == 0 and all("metadata" not in row["meta"] for row in lean.samples)

    body = lead_client.post(board.url("export-create"), form_data(project), **HX).content.decode()
    assert "Rows as JSON: about" in body and "pair metadata makes about" in body
    assert re.search(r"the largest about <strong>1?\d\.\d\sKB</strong>", body)
    body = lead_client.post(board.url("export-create"), form_data(project, include_metadata=None), **HX)
    assert "pair metadata makes" not in body.content.decode()


def test_disagreement_counts_only_pairs_with_votes(project, lead, lead_client, make_user, tmp_path):
    users = raters(make_user, project, 3)
    pairs = build_pairs(project, [("Q0", "", {}), ("Q1", "", {}), ("Q2", "", {})], users)
    for pair in pairs[:2]:  # settled by the lead alone
        review.pair_adjudicate(pair=pair, label="a", note="", user=lead)
    board = Board(project, pairs, users, lead)
    preview = export_preview(project, rules=rules_for(project), shape="standard")
    assert preview.kept == 2 and preview.disagreement == consensus.Disagreement(
        pairs=2, voted=0, non_unanimous=None, vote_error=0.0, label_noise=0.0
    )
    body = lead_client.post(board.url("export-create"), form_data(project), **HX).content.decode()
    assert "settled by a lead without votes: there is no disagreement to measure" in body
    assert "1.000" not in body and "100%" not in body
    snapshot = create(lead_client, board, eval_fraction=0)
    assert (snapshot.disagreement, snapshot.label_noise, snapshot.suggested_label_smoothing) == (
        None,
        0.0,
        0.0,
    )
    page = lead_client.get(snapshot.get_absolute_url()).content.decode()
    assert "every kept A/B pair was settled by a lead without votes" in page and "1.000" not in page
    out = io.StringIO()
    call_command("export_pairs", project.slug, "--out", str(tmp_path), stdout=out, stderr=io.StringIO())
    assert (
        "No disagreement to measure" in out.getvalue()
        and "suggested cDPO label_smoothing 0.0" in out.getvalue()
    )

    # A voted pair beside them: the share is over the one pair with votes, not over all three.
    for user, choice in zip(users, "aab", strict=True):
        vote(pairs[2], user, choice)
    preview = export_preview(project, rules=rules_for(project), shape="standard")
    assert (preview.disagreement.pairs, preview.disagreement.voted, preview.disagreement.non_unanimous) == (
        3,
        1,
        1.0,
    )
    body = lead_client.post(board.url("export-create"), form_data(project), **HX).content.decode()
    assert "Of the 1 kept A/B pair with votes, 100% was not unanimous (3 kept in all" in body


def test_export_pairs_takes_the_hosted_shape_a_written_share_and_no_metadata(board, tmp_path):
    out = io.StringIO()
    options = ["--out", str(tmp_path), "--shape", "openai-preference", "--min-share", "2/3", "--no-metadata"]
    call_command("export_pairs", "alpha", *options, "--eval-fraction", "0", stdout=out, stderr=io.StringIO())
    snapshot = ExportSnapshot.objects.get()
    assert (snapshot.shape, snapshot.min_share_text, snapshot.include_metadata) == (
        "openai-preference",
        "2/3",
        False,
    )
    assert snapshot.rules["min_share"] == 2 / 3 and snapshot.kept == 4
    rows = read_rows(tmp_path / "train.jsonl")
    assert len(rows) == 4 and all(
        list(row) == ["input", "preferred_output", "non_preferred_output"] for row in rows
    )
    text = out.getvalue()
    assert "dropped: Fewer judgments than the minimum: 3; " in text and "too_few_votes" not in text
    call_command(
        "export_pairs",
        "alpha",
        "--out",
        str(tmp_path / "strict"),
        "--min-share",
        "0.667",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert ExportSnapshot.objects.get(min_share_text="0.667").kept == 1


# The Dawid–Skene rule


def test_the_dawid_skene_rule_end_to_end(board, lead_client):
    snapshot = create(lead_client, board, method="dawid-skene", min_posterior=0.9, eval_fraction=0)
    assert snapshot.state == "done", snapshot.message
    # The same fit from the pure function on every counted judgment (gold pairs too).
    fit = agreement.dawid_skene(
        [(pair.pk, board.raters[j].pk, choice)
         for pair, (_, _, votes) in zip(board.pairs, LAYOUT, strict=True) for j, choice in votes.items()]
    )  # fmt: skip
    posterior = {
        int(item): dict(zip(fit.labels, row.tolist(), strict=True))
        for item, row in zip(fit.items, fit.posterior, strict=True)
    }
    rules = rules_for(board.project, method="dawid-skene", min_posterior=0.9)
    by_pair = [
        consensus.decide(
            list(votes.values()), rules=rules, is_gold=bool(gold), posterior=posterior.get(pair.pk, {})
        )
        for pair, (_, gold, votes) in zip(board.pairs, LAYOUT, strict=True)
    ]
    flat = [not isinstance(prompt, list) for prompt, _, _ in LAYOUT]
    reasons = [
        exporting.drop_reason(d, shape="standard", flat_prompt=f) for d, f in zip(by_pair, flat, strict=True)
    ]
    assert snapshot.dropped == {r: reasons.count(r) for r in set(reasons) - {None}}
    assert snapshot.kept == reasons.count(None) > 0
    exported = {row["id"]: row for row in read_rows(files_of(snapshot)["train"])}
    for i, (pair, reason, decision) in enumerate(zip(board.pairs, reasons, by_pair, strict=True)):
        if reason is None:
            chosen = pair.response_a if decision.chosen == "a" else pair.response_b
            assert exported[f"p{i}"]["chosen"] == chosen
    # Label noise: the mean, over kept A/B pairs, of 1 minus the posterior of their label.
    kept = [(pair, d) for pair, d in zip(board.pairs, by_pair, strict=True) if d.kept and d.chosen]
    noise = sum(1 - posterior[pair.pk][d.label] for pair, d in kept) / len(kept)
    assert snapshot.label_noise == pytest.approx(noise)
    preview = export_preview(
        board.project, rules=consensus.ConsensusRules(**snapshot.rules), shape="standard"
    )
    assert (preview.kept, preview.dropped) == (snapshot.kept, snapshot.dropped)
    assert preview.label_noise == pytest.approx(snapshot.label_noise)
    assert preview.suggested_label_smoothing == snapshot.suggested_label_smoothing


def test_tool_calls_and_multi_message_responses_are_kept_whole_or_dropped_with_a_reason(
    project, lead, lead_client, make_user
):
    from labeling.conversations import response_text

    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    turns = [{"role": "assistant", "content": "", "tool_calls": [call]},
             {"role": "tool", "content": "-3 C", "tool_call_id": "c1"},
             {"role": "assistant", "content": "It is -3 C."}]  # fmt: skip
    users = raters(make_user, project, 3)
    (pair,) = build_pairs(project, [("Weather in Oslo?", "", {0: "a", 1: "a", 2: "a"})], users)
    Pair.objects.filter(pk=pair.pk).update(response_a=response_text(turns))
    board = Board(project, [pair], users, lead)
    rules = rules_for(project)
    expected = {("standard", "jsonl"): "chat_response", ("conversational", "parquet"): "tool_calls",
                ("openai-preference", "jsonl"): "chat_response",
                ("conversational", "jsonl"): None}  # fmt: skip
    for (shape, fmt), reason in expected.items():
        preview = export_preview(project, rules=rules, shape=shape, fmt=fmt)
        assert preview.dropped == ({reason: 1} if reason else {}), (shape, fmt)
        snapshot = create(lead_client, board, shape=shape, format=fmt, eval_fraction=0)
        assert snapshot.dropped == preview.dropped and snapshot.kept == preview.kept, (shape, fmt)
    [row] = read_rows(files_of(snapshot)["train"])  # the conversational JSONL keeps the tool turns
    assert row["chosen"] == turns


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_hosted_shape_drops_messages_with_more_than_role_and_content(
    project, lead, lead_client, make_user, fmt
):
    users = raters(make_user, project, 3)
    named = [{"role": "user", "content": "Hi", "name": "ann"}]
    pairs = build_pairs(
        project, [(named, "", {0: "a", 1: "a", 2: "a"}), ("Q", "", {0: "b", 1: "b", 2: "b"})], users
    )
    board = Board(project, pairs, users, lead)
    preview = export_preview(project, rules=rules_for(project), shape="openai-preference", fmt=fmt)
    assert (preview.kept, preview.dropped) == (1, {"tool_calls_hosted": 1})
    body = lead_client.post(
        board.url("export-create"), form_data(project, shape="openai-preference", format=fmt), **HX
    )
    assert consensus.REASONS["tool_calls_hosted"] in body.content.decode()
    snapshot = create(lead_client, board, shape="openai-preference", format=fmt, eval_fraction=0)
    assert (snapshot.kept, snapshot.dropped) == (preview.kept, preview.dropped)
