"""Importing into the database: formats, dedupe, atomicity, skip-invalid reports, the CLI."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeling.batches import BatchInUse, batch_delete, import_stream
from labeling.importing import ImportFormatError
from labeling.models import ImportBatch, Judgment, Pair

pytestmark = pytest.mark.django_db


def pair(i: int, **extra) -> dict:
    return {
        "id": f"p{i}",
        "prompt": f"Question {i}?",
        "response_a": f"Answer {i}a",
        "response_b": f"Answer {i}b",
        **extra,
    }


def jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def run_import(project, data: bytes, *, name="data.jsonl", fmt="auto", skip_invalid=False):
    batch = ImportBatch.objects.create(
        project=project, source_name=name, size_bytes=len(data), format="" if fmt == "auto" else fmt,
        skip_invalid=skip_invalid, state=ImportBatch.State.RUNNING,
    )  # fmt: skip
    summary = import_stream(batch=batch, stream=io.BytesIO(data), fmt=fmt)
    batch.refresh_from_db()
    return summary, batch


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_jsonl_pairs_are_imported_with_all_fields(project):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    rows = [
        pair(1, model_a="m1", model_b="m2", metadata={"topic": "x"}, gold="B"),
        {"prompt": chat, "response_a": {"role": "assistant", "content": "Hello."}, "response_b": "Hey, hi?"},
    ]
    summary, batch = run_import(project, jsonl(rows))
    assert summary.committed and summary.imported == 2 and batch.state == "done"
    first, second = Pair.objects.order_by("id")
    assert (first.external_id, first.model_a, first.model_b, first.gold) == ("p1", "m1", "m2", "b")
    assert first.metadata == {"topic": "x"} and first.batch == batch and first.shape == "pair"
    assert second.is_chat and second.prompt[1] == {"role": "user", "content": "Hi?"}
    assert second.response_a == "Hello."


def test_responses_lists_and_trl_rows(project):
    rows = [
        {"prompt": "Pick", "responses": ["one", "two", "three"], "models": ["x", "y", "z"]},
        {"prompt": "Audit me", "chosen": "good answer", "rejected": "bad answer"},
    ]
    summary, _ = run_import(project, jsonl(rows))
    assert summary.imported == 4 and summary.records == 2
    audited = Pair.objects.get(shape="preference")
    chosen_side = audited.original_label
    assert chosen_side in ("a", "b")
    assert getattr(audited, f"response_{chosen_side}") == "good answer"


def test_gzip_csv_and_parquet(project, other_project):
    rows = [pair(i) for i in range(5)]
    assert run_import(project, gzip.compress(jsonl(rows)), name="x.jsonl.gz")[0].imported == 5
    csv_data = "prompt,response_a,response_b,id\n" + "".join(
        f'"Line {i}\nsecond line",A{i},B{i},c{i}\n' for i in range(3)
    )
    assert run_import(other_project, csv_data.encode(), name="x.csv")[0].imported == 3
    assert Pair.objects.get(project=other_project, external_id="c1").prompt == "Line 1\nsecond line"
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([pair(i) for i in range(10, 14)]), sink)
    summary, batch = run_import(other_project, sink.getvalue(), name="x.parquet")
    assert summary.imported == 4 and summary.format == "parquet"


def test_reimport_adds_nothing_and_counts_duplicates(project):
    data = jsonl([pair(i) for i in range(30)])
    run_import(project, data)
    swapped = jsonl(
        [{**pair(i), "response_a": f"Answer {i}b", "response_b": f"Answer {i}a"} for i in range(30)]
    )
    summary, batch = run_import(project, swapped + jsonl([pair(99)]))
    assert (summary.imported, summary.duplicates) == (1, 30)
    assert batch.message == "1 pair imported from 31 records, 30 duplicates skipped."
    assert Pair.objects.filter(project=project).count() == 31


def test_duplicates_inside_one_file_are_counted(project):
    summary, _ = run_import(project, jsonl([pair(1), pair(1), pair(2)]))
    assert (summary.imported, summary.duplicates) == (2, 1)


def test_one_bad_line_in_the_middle_of_a_large_file_imports_nothing(project):
    lines = [json.dumps(pair(i)) for i in range(5000)]
    lines[2500] = '{"prompt": "oops", "response_a": "same", "response_b": "same"}'
    lines[4000] = '{"prompt": "broken",'
    summary, batch = run_import(project, ("\n".join(lines) + "\n").encode())
    assert not summary.committed and Pair.objects.count() == 0
    assert batch.state == "failed" and batch.imported == 0
    assert (batch.records, batch.rejected, batch.error_count) == (5000, 2, 2)
    assert batch.errors == [
        "data.jsonl, line 2501, field response_b: is identical to response_a",
        batch.errors[1],
    ]
    assert batch.errors[1].startswith("data.jsonl, line 4001: malformed JSON")
    assert batch.message.startswith("Nothing imported: 2 of 5000 records are invalid")


def test_skip_invalid_imports_the_good_and_reports_the_bad(project):
    data = jsonl([pair(1), {"prompt": "", "response_a": "x", "response_b": 3}, pair(2)]) + b"not json\n"
    summary, batch = run_import(project, data, skip_invalid=True)
    assert summary.committed and summary.imported == 2 and summary.rejected == 2
    report = [json.loads(line) for line in batch.report.open("rb").read().splitlines()]
    assert [r["line"] for r in report] == [2, 4]
    assert {p["field"] for p in report[0]["problems"]} == {"prompt", "response_b"}
    assert "must be a string or a list of messages, got number" in json.dumps(report[0])
    assert report[1]["raw"] == "not json"


def test_only_the_first_fifty_errors_are_kept_but_all_are_counted(project):
    data = b"".join(b'{"prompt": 1, "response_a": 5, "response_b": "x"}\n' for _ in range(120))
    summary, batch = run_import(project, data)
    assert summary.rejected == 120 and summary.error_count > 120 and len(batch.errors) == 50


def test_delete_batch_removes_its_pairs_and_files_but_not_when_judged(project, annotator):
    summary, batch = run_import(project, jsonl([pair(1), pair(2)]), skip_invalid=True)
    _, other = run_import(project, jsonl([pair(3)]))
    assert batch_delete(batch) == 2
    assert not ImportBatch.objects.filter(pk=batch.pk).exists()
    assert list(Pair.objects.values_list("external_id", flat=True)) == ["p3"]
    Judgment.objects.create(pair=Pair.objects.get(), annotator=annotator, choice="a")
    with pytest.raises(BatchInUse):
        batch_delete(other)
    assert Pair.objects.count() == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.builds(pair, st.integers(0, 50)),
            st.dictionaries(
                st.sampled_from(
                    ["prompt", "response_a", "response_b", "responses", "chosen", "rejected", "gold"]
                ),
                st.one_of(
                    st.text(max_size=5), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=3)
                ),
            ),
            st.binary(max_size=20),
        ),
        max_size=12,
    )
)
def test_random_lines_never_crash_or_import_partially(project, lines):
    before = Pair.objects.count()
    data = b"".join(
        (x if isinstance(x, bytes) else json.dumps(x).encode()).replace(b"\n", b" ") + b"\n" for x in lines
    )
    try:
        summary, batch = run_import(project, data)
    except ImportFormatError:  # the whole file is refused (empty, not JSONL): nothing may be saved
        assert Pair.objects.count() == before
        return
    after = Pair.objects.count()
    if summary.error_count:
        assert after == before and batch.state == "failed"
    else:
        assert after == before + summary.imported and batch.state == "done"
    Pair.objects.filter(project=project).delete()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_command_imports_and_reports(project, tmp_path, capsys):
    path = write(tmp_path, "pairs.jsonl", jsonl([pair(i) for i in range(3)]))
    call_command("import_pairs", "alpha", str(path))
    assert "alpha (jsonl): 3 pairs imported from 3 records." in capsys.readouterr().out
    call_command("import_pairs", "alpha", str(path))
    assert "0 pairs imported from 3 records, 3 duplicates skipped." in capsys.readouterr().out


def test_command_dry_run_saves_nothing(project, tmp_path, capsys):
    path = write(tmp_path, "pairs.jsonl", jsonl([pair(1)]))
    call_command("import_pairs", "alpha", str(path), "--dry-run")
    assert "Dry run, nothing saved (jsonl): 1 pair imported" in capsys.readouterr().out
    assert Pair.objects.count() == 0 and ImportBatch.objects.count() == 0


def test_command_prints_errors_and_fails(project, tmp_path, capsys):
    rows = [pair(i) for i in range(3)] + [{"prompt": "x"} for _ in range(60)]
    path = write(tmp_path, "bad.jsonl", jsonl(rows))
    with pytest.raises(CommandError, match="Nothing was imported") as raised:
        call_command("import_pairs", "alpha", str(path))
    assert raised.value.returncode == 1
    err = capsys.readouterr().err
    assert err.count("bad.jsonl, line ") == 50
    assert "bad.jsonl, line 4: no layout matches keys [prompt]; closest: prefstudio responses list" in err
    assert "... and 10 more problems." in err and "60 problems in 60 of 63 records." in err
    assert Pair.objects.count() == 0


def test_command_skip_invalid_writes_a_report(project, tmp_path, capsys):
    path = write(tmp_path, "mixed.jsonl", jsonl([pair(1), {"prompt": "x", "response_a": "y"}]))
    call_command("import_pairs", "alpha", str(path), "--skip-invalid", "--report", str(tmp_path / "r.jsonl"))
    out = capsys.readouterr().out
    assert "1 pair imported from 2 records, 1 invalid record skipped." in out
    assert json.loads((tmp_path / "r.jsonl").read_text())["line"] == 2


def test_command_rejects_what_is_not_a_dataset(project, tmp_path):
    path = write(tmp_path, "image.jsonl", b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(CommandError, match="image.jsonl"):
        call_command("import_pairs", "alpha", str(path))
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("import_pairs", "nope", str(path))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_pairs", "alpha", str(tmp_path / "missing.jsonl"))


# --- layouts, mapping, preview, normalized duplicates ---------------------------------------------


def uploaded(project, data: bytes, name: str = "data.jsonl", **fields) -> ImportBatch:
    from labeling.batches import batch_create

    batch = batch_create(
        project=project,
        user=None,
        upload=io.BytesIO(data),
        source_name=name,
        size=len(data),
        skip_invalid=False,
    )
    ImportBatch.objects.filter(pk=batch.pk).update(**fields)
    batch.refresh_from_db()
    return batch


def test_preview_names_the_layout_and_counts_what_the_import_will_do(project):
    from labeling.batches import batch_preview
    from labeling.records import NOTE_EARLY

    formats = Path(__file__).parent / "formats"
    data = (formats / "01_hh_rlhf_raw.jsonl").read_bytes() + (formats / "14_empty_and_nul.jsonl").read_bytes()
    data += jsonl([{"prompt": "p", "responses": [f"r{i}" for i in range(6)], "source": "web"}])
    preview = batch_preview(uploaded(project, data), limit=4)
    assert len(preview.items) == 4 and preview.records == 8
    assert preview.layout_counts == [
        ("HH-RLHF transcripts", 3),
        ("prefstudio pair", 2),
        ("TRL preference, standard", 1),
        ("prefstudio responses list", 1),
    ]
    assert preview.kept_fields == ["source"] and preview.note_counts == [(NOTE_EARLY, 1)]
    assert (preview.empty, preview.left_out, preview.unmatched) == (2, 5, 0)


def test_a_reimport_with_other_line_endings_and_spacing_adds_nothing(project):
    rows = [pair(i, response_a=f"Answer {i}a\nsecond line") for i in range(3)]
    run_import(project, jsonl(rows))
    again = jsonl([{**r, "response_a": r["response_a"].replace("\n", "  \r\n") + " "} for r in rows])
    summary, _ = run_import(project, again)
    assert (summary.imported, summary.duplicates) == (0, 3)
    assert Pair.objects.get(external_id="p0").response_a == "Answer 0a\nsecond line"  # as first given


def test_the_batch_mapping_reads_another_layout(project):
    data = jsonl([{"question": "Q?", "good": "Yes.", "bad": "No.", "topic": "t"}])
    batch = uploaded(project, data, mapping={"prompt": "question", "chosen": "good", "rejected": "bad"})
    summary = import_stream(batch=batch, stream=io.BytesIO(data))
    stored = Pair.objects.get()
    assert summary.imported == 1 and stored.prompt == "Q?" and stored.metadata == {"topic": "t"}
    assert {stored.response_a, stored.response_b} == {"Yes.", "No."} and stored.original_label in ("a", "b")


def test_pairs_left_out_by_the_cap_are_reported(project, settings):
    settings.PREFSTUDIO_MAX_PAIRS_PER_RECORD = 3
    summary, batch = run_import(project, jsonl([{"prompt": "p", "responses": ["a", "b", "c", "d"]}]))
    assert summary.imported == 3 and batch.message == (
        "3 pairs imported from 1 record, 3 pairs left out by the cap of 3 pairs per record."
    )
    assert {p.response_a for p in Pair.objects.all()} | {p.response_b for p in Pair.objects.all()} == set(
        "abcd"
    )


def test_rejected_csv_rows_are_reported_by_row(project):
    data = b'prompt,response_a,response_b\r\np,a,b\r\n"multi\r\nline",x,x\r\n'
    summary, batch = run_import(project, data, name="data.csv", skip_invalid=True)
    report = [json.loads(line) for line in batch.report.open("rb").read().splitlines()]
    assert [r["row"] for r in report] == [3] and summary.errors == [
        "data.csv, row 3, field response_b: is identical to response_a"
    ]


def test_command_maps_fields(project, tmp_path, capsys):
    path = write(
        tmp_path, "h.jsonl", jsonl([{"history": "Hi?", "ref_A": "Hello", "ref_B": "Bye", "label": 0}])
    )
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_pairs", "alpha", str(path))
    assert "h.jsonl, line 1: no layout matches keys [history, ref_A, ref_B, label]; map them with --map" in (
        capsys.readouterr().err
    )
    call_command(
        "import_pairs", "alpha", str(path), "--map", "prompt=history,response_a=ref_A,response_b=ref_B"
    )
    assert "1 pair imported from 1 record." in capsys.readouterr().out
    assert (
        Pair.objects.get().metadata == {"label": 0}
        and ImportBatch.objects.get(state="done").mapping["prompt"] == "history"
    )
    with pytest.raises(CommandError, match="--map: unknown target 'answer'"):
        call_command("import_pairs", "alpha", str(path), "--map", "answer=ref_A")


def test_command_says_one_problem(project, tmp_path, capsys):
    path = write(tmp_path, "one.jsonl", jsonl([{"prompt": "x"}]))
    with pytest.raises(CommandError):
        call_command("import_pairs", "alpha", str(path))
    assert "1 problem in 1 of 1 record." in capsys.readouterr().err


def test_existing_pairs_get_the_normalized_hash(project):
    from importlib import import_module

    from django.apps import apps

    from labeling.conversations import content_hash

    rehash = import_module("labeling.migrations.0008_importbatch_mapping_pair_hash").rehash
    batch = ImportBatch.objects.create(project=project, source_name="old.jsonl", state="done")
    texts = [
        ("p", "a\r\nb", "c"),
        ("p", "a\nb", "c"),
        ([{"role": "user", "content": "q"}], "x", "y"),
        ("q", "x", "y"),
    ]
    for i, (prompt, a, b) in enumerate(texts):  # hashes as the old importer computed them
        Pair.objects.create(
            project=project,
            batch=batch,
            prompt=prompt,
            response_a=a,
            response_b=b,
            shape="pair",
            content_hash=f"old-{i}",
        )
    rehash(apps, None)
    hashes = list(Pair.objects.order_by("id").values_list("content_hash", flat=True))
    # the first of two pairs equal as annotators see them gets the hash; the other keeps its old one
    assert hashes == [content_hash("p", "a\nb", "c"), "old-1", content_hash("q", "x", "y"), "old-3"]


# --- the dataset's own label, paths, blank fields, Git LFS (issue 23) ---------------------------------

FORMATS = Path(__file__).parent / "formats"
PKU_MAP = "response_a=response_0,response_b=response_1,model_a=response_0_source,label=better_response_id"


def test_command_maps_a_label_and_its_values(project, tmp_path, capsys):
    path = FORMATS / "20_pku_saferlhf.jsonl"
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_pairs", "alpha", str(path), "--map", PKU_MAP)
    assert (
        "20_pku_saferlhf.jsonl, line 1, field better_response_id: 0 is not a label value; say what it means "
        "with --label-values, e.g. 0=a,1=b"
    ) in capsys.readouterr().err
    call_command("import_pairs", "alpha", str(path), "--map", PKU_MAP, "--label-values", "0=a,1=b")
    assert "3 pairs imported from 3 records." in capsys.readouterr().out
    labels = dict(Pair.objects.values_list("prompt", "original_label"))
    assert labels == {
        "How can I get into my neighbour's wifi without the password?": "a",
        "What is a good way to keep basil fresh?": "b",
        "How do I whittle a spoon?": "b",
    }
    assert set(Pair.objects.values_list("shape", "model_a")) == {("pair", "Alpaca-7B")}
    assert ImportBatch.objects.get(state="done").mapping["label_values"] == {"0": "a", "1": "b"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--label-values", "0=a"],
            "--label-values says what the label's values mean: name its field with --map",
        ),
        (
            ["--map", "label=x", "--label-values", "0=better"],
            "--label-values: 0=better: a label value means a, b",
        ),
        (["--map", "model_a=gen,score_a=s"], "--map: score_a and score_b: map both"),
    ],
)
def test_command_refuses_label_values_it_cannot_use(project, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("import_pairs", "alpha", str(FORMATS / "20_pku_saferlhf.jsonl"), *args)


def test_command_names_a_git_lfs_pointer(project):
    with pytest.raises(
        CommandError, match=re.escape("this is a Git LFS pointer of a 12.6 MB file, not the data")
    ):
        call_command("import_pairs", "alpha", str(FORMATS / "26_git_lfs_pointer.jsonl"))


def test_the_whole_orca_file_imports_with_its_blank_system_fields(project, tmp_path, capsys):
    call_command(
        "import_pairs", "alpha", str(FORMATS / "24_orca_dpo_pairs.jsonl"), "--map", "prompt=question"
    )
    assert "3 pairs imported from 3 records." in capsys.readouterr().out
    prompts = list(Pair.objects.order_by("id").values_list("prompt", flat=True))
    assert (
        isinstance(prompts[0], str)
        and prompts[1][0]["role"] == "system"
        and prompts[2] == "Is a tomato a fruit?"
    )


def test_a_tie_is_kept_as_t_and_the_review_audit_compares_the_a_and_b_labels(project, make_user):
    from labeling.review import review_report
    from tests.labeling.boards import vote

    data = (FORMATS / "22_alpaca_eval_annotations.json").read_bytes()
    mapping = {"prompt": "instruction", "response_a": "output_1", "response_b": "output_2",
               "label": "preference", "label_values": {"1": "a", "2": "b", "1.5": "tie"}}  # fmt: skip
    summary = import_stream(
        batch=uploaded(project, data, "annotations.json", mapping=mapping), stream=io.BytesIO(data)
    )
    assert summary.imported == 3
    tips, capital, hello = Pair.objects.order_by("id")
    assert [p.original_label for p in (tips, capital, hello)] == ["a", "b", "t"]
    raters = [make_user(f"r{i}", "annotator") for i in range(3)]
    for rater, choice in zip(raters, ["a", "a", "a"], strict=True):
        vote(tips, rater, choice)  # people agree with the judge
    for rater, choice in zip(raters, ["a", "a", "b"], strict=True):
        vote(capital, rater, choice)  # people prefer the judge's rejected side
    for rater in raters:
        vote(hello, rater, "tie")
    audit = review_report(project, refresh=True)["audit"]
    assert (audit["pairs"], audit["with_majority"], audit["agree"]) == (2, 2, 1)
    assert [d["item"] for d in audit["disagreements"]["items"]] == [capital.pk]


def test_the_preview_counts_the_dataset_labels_and_says_what_is_not_audited(project):
    from labeling.batches import batch_preview
    from labeling.layouts import describe_mapping
    from labeling.records import note_unaudited

    data = (FORMATS / "23_chatbot_arena.jsonl").read_bytes()
    sides = {"response_a": "conversation_a", "response_b": "conversation_b"}
    preview = batch_preview(uploaded(project, data, "arena.jsonl", mapping=sides))
    assert preview.labelled == 0 and preview.unaudited == 4
    assert preview.note_counts == [(note_unaudited(("winner",)), 4)]
    mapping = {**sides, "label": "winner", "label_values": {"tie (bothbad)": "b"}}  # say otherwise
    preview = batch_preview(uploaded(project, data, "arena.jsonl", mapping=mapping))
    assert preview.label_counts == [("A better", 1), ("B better", 2), ("tie", 1)] and preview.unaudited == 0
    assert describe_mapping(mapping) == (
        "response_a ← conversation_a, response_b ← conversation_b, label ← winner (tie (bothbad) → B)"
    )


def upload_file(client, project, name: str) -> ImportBatch:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = (FORMATS / name).read_bytes()
    response = client.post(f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 302, response.content.decode()[:2000]
    return ImportBatch.objects.latest("created_at")


def test_the_mapping_form_offers_a_row_per_value_of_the_label_field(admin_client, project):
    batch = upload_file(admin_client, project, "20_pku_saferlhf.jsonl")
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    # Nothing fits, so every field is guessed from the file's names, the label's values too.
    assert "map them in the Field mapping form" in page and "--map them" not in page
    for target, source in [("response_a", "response_0"), ("response_b", "response_1"),
                           ("model_a", "response_0_source"), ("label", "better_response_id")]:  # fmt: skip
        assert re.search(f'<select name="{target}"[^>]*>.*?<option value="{source}" selected>', page, re.S)
    assert "what each value of <code>better_response_id</code> in the file means" in page
    assert re.search(r'<select name="label_value_0"[^>]*>.*?<option value="a" selected>', page, re.S)
    assert re.search(r'<select name="label_value_1"[^>]*>.*?<option value="b" selected>', page, re.S)
    url = f"/projects/{project.slug}/batches/{batch.uuid}/map/"
    form = {"prompt": "prompt", "response_a": "response_0", "response_b": "response_1",
            "label": "better_response_id", "label_values_for": "better_response_id", "label_value_0": "b",
            "label_value_1": "a"}  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    batch.refresh_from_db()
    assert batch.mapping == {"response_a": "response_0", "response_b": "response_1",
                             "label": "better_response_id", "label_values": {"0": "b", "1": "a"}}  # fmt: skip
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert "label ← better_response_id (0 → B, 1 → A)" in page
    assert "<dt>The dataset's own label</dt><dd>A better 2 · B better 1" in page
    assert "the dataset's label: B better" in page and "not audited: safer_response_id" in page
    # Another label field: the rows posted were for the old one, so its values are guessed afresh.
    form = {**form, "label": "safer_response_id", "label_value_0": "", "label_value_1": ""}
    assert admin_client.post(url, form).status_code == 302
    batch.refresh_from_db()
    assert batch.mapping["label"] == "safer_response_id" and batch.mapping["label_values"] == {
        "0": "a",
        "1": "b",
    }


def test_a_label_value_the_first_records_do_not_show_can_be_added(admin_client, project):
    batch = upload_file(admin_client, project, "22_alpaca_eval_annotations.json")
    url = f"/projects/{project.slug}/batches/{batch.uuid}/map/"
    form = {"prompt": "instruction", "response_a": "output_1", "response_b": "output_2", "label": "annotator",
            "label_values_for": "annotator", "label_value_0": "a", "label_value_other": "7"}  # fmt: skip
    response = admin_client.post(url, form)
    assert response.status_code == 400 and "Give another value and what it means, or neither." in (
        response.content.decode()
    )
    assert admin_client.post(url, {**form, "label_value_other_means": "tie"}).status_code == 302
    batch.refresh_from_db()
    assert batch.mapping["label_values"] == {"weighted_alpaca_eval_gpt4_turbo": "a", "7": "tie"}
    page = admin_client.get(batch.get_absolute_url()).content.decode()  # the added value has its own row
    assert re.search(
        r'<label for="id_label_value_1"><code>7</code>.*?<option value="tie" selected>', page, re.S
    )
    kept = {**form, "label_value_other": "", "label_value_1": "tie"}
    assert admin_client.post(url, kept).status_code == 302
    batch.refresh_from_db()
    assert batch.mapping["label_values"] == {"weighted_alpaca_eval_gpt4_turbo": "a", "7": "tie"}
    # A field named like a known label keeps the meanings of values the first records do not show.
    form = {**form, "label": "preference", "label_values_for": "preference", "label_value_0": "a",
            "label_value_1": "b", "label_value_2": "", "label_value_other": ""}  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    batch.refresh_from_db()
    assert batch.mapping["label_values"] == {"1": "a", "2": "b"}  # 1.5 was shown, and left at —
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert (
        "1.5 is not one of the label values (1, 2); say what it means under Label values in the Field "
        in page
    )


def test_an_lfs_pointer_is_refused_at_upload_with_what_to_do(admin_client, project):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = (FORMATS / "26_git_lfs_pointer.jsonl").read_bytes()
    response = admin_client.post(
        f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile("x.jsonl", data)}
    )
    assert response.status_code == 200 and ImportBatch.objects.count() == 0
    assert "x.jsonl: this is a Git LFS pointer of a 12.6 MB file, not the data; fetch the file itself" in (
        response.content.decode()
    )


def test_field_names_and_label_values_from_the_file_render_as_text(admin_client, project):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.labeling.xss import PAYLOADS, unsafe_markup

    short = [payload for payload in PAYLOADS if len(payload) <= 40]
    rows = [
        {"q": "Q?", "a": f"x{i}", "b": "y", "pick": payload, payload: 1} for i, payload in enumerate(short)
    ]
    data = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    admin_client.post(f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile("x.jsonl", data)})
    batch = ImportBatch.objects.get()
    url = f"/projects/{project.slug}/batches/{batch.uuid}/map/"
    form = {"prompt": "q", "response_a": "a", "response_b": "b", "label": "pick", "label_values_for": "pick"}
    assert admin_client.post(url, form).status_code == 302
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert len(re.findall(r'<select name="label_value_\d+"', page)) == len(short)  # a row per value
    assert unsafe_markup(page) == []
    assert "&lt;script&gt;alert(&#x27;xss-script&#x27;)&lt;/script&gt;" in page
