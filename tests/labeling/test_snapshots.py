"""Exports from the database: the preview's counts, immutable snapshots with their files and lineage,
the pages and their permissions, the worker path, TRL's loaders and checks, the command, a round trip
through the importer, and the Dawid–Skene rule."""

from __future__ import annotations

import hashlib
import io
import json
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
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


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
    assert response.status_code == 400 and "Minimum share: Ensure this value" in response.content.decode()
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


def test_rows_carry_the_votes_models_and_criteria(project, lead, make_user):
    project.criteria = [{"name": "Tone", "question": "Which is kinder?"}, {"name": "a__b", "question": "?"}]
    project.save()
    users = raters(make_user, project, 3)
    (pair,) = build_pairs(project, [("Q", "", {0: "b", 1: "b", 2: "a"})], users)
    Pair.objects.filter(pk=pair.pk).update(model_a="m-a", model_b="m-b", metadata={"source": "arena", "n": 2})
    Judgment.objects.filter(annotator__in=users[:2]).update(criteria={"Tone": "b", "a__b": "tie"})
    Judgment.objects.filter(annotator=users[2]).update(criteria={"Tone": "a"})
    snapshot = snapshot_start(
        project=project, user=lead, rules=rules_for(project), shape="standard", fmt="parquet", eval_fraction=0
    )
    (row,) = read_rows(files_of(snapshot)["train"])
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Q", "A longer answer B0", "Answer A0")
    meta = row["meta"]
    assert meta["models"] == {"chosen": "m-b", "rejected": "m-a"}
    assert meta["votes"] == {"a": 1, "b": 2, "tie": 0, "both_bad": 0} and meta["label"] == "b"
    assert meta["share"] == pytest.approx(2 / 3) and meta["adjudicated"] is False
    assert json.loads(meta["criteria"]) == {
        "Tone": {"a": 1, "b": 2, "tie": 0}, "a__b": {"a": 0, "b": 0, "tie": 2},
    }  # fmt: skip
    assert json.loads(meta["metadata"]) == {"source": "arena", "n": 2}


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
        assert data.column_names == [*TRL_COLUMNS[shape], "id", "meta"]
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
    with pytest.raises(CommandError, match="Invalid rule: min_share"):
        call_command("export_pairs", "alpha", *out, "--min-share", "2")
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
                ("conversational", "jsonl"): None}  # fmt: skip
    for (shape, fmt), reason in expected.items():
        preview = export_preview(project, rules=rules, shape=shape, fmt=fmt)
        assert preview.dropped == ({reason: 1} if reason else {}), (shape, fmt)
        snapshot = create(lead_client, board, shape=shape, format=fmt, eval_fraction=0)
        assert snapshot.dropped == preview.dropped and snapshot.kept == preview.kept, (shape, fmt)
    [row] = read_rows(files_of(snapshot)["train"])  # the conversational JSONL keeps the tool turns
    assert row["chosen"] == turns
