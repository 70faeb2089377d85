"""Files through an S3-compatible object store (moto's server on the loopback, tests/s3.py): the storage
helpers, imports, exports, training, resume and downloads, with workers that share no folder with the web
process. The same code on the local filesystem is what the rest of the suite runs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.request
import zipfile
from pathlib import Path

import django_rq
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling import batches
from labeling.models import ExportSnapshot, ImportBatch, Pair
from labeling.snapshots import rules_for, snapshot_delete, snapshot_start
from prefstudio import storage
from tests.conftest import worker_for
from tests.labeling.boards import raters, vote
from tests.s3 import bucket_keys
from tests.training.conftest import make_snapshot
from tests.workers import needs_postgres, start_worker, worker_log
from training import runner, services
from training.models import TrainingRun

TINY = {
    "loss_type": "sigmoid", "beta": 0.1, "learning_rate": 5e-3, "batch_size": 4, "max_length": 96,
    "lora_r": 4, "lora_alpha": 8, "seed": 0, "eval_steps": 0, "save_steps": 2,
}  # fmt: skip


def _pairs_jsonl(n: int) -> bytes:
    rows = [
        {"id": f"p{i}", "prompt": f"What is {i} plus {i}?", "response_a": f"It is {2 * i}.",
         "response_b": f"Well, I think it could be {2 * i + 1}, but who knows."}
        for i in range(n)
    ]  # fmt: skip
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_transfers_stream_both_ways_and_a_mirror_sends_only_what_changed(s3, tmp_path):
    media = storage.media()
    assert storage.is_remote(media) and storage.local_path(media, "x") is None
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several chunks
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    storage.upload(media, "a/big.bin", source)
    assert bucket_keys(s3) == ["media/a/big.bin"]
    chunks = list(storage.iter_chunks(media, "a/big.bin"))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= storage.CHUNK and len(chunks) >= 3
    copy = storage.download(media, "a/big.bin", tmp_path / "down" / "big.bin")
    assert copy.read_bytes() == data and not list(copy.parent.glob(".*"))  # no partial file left
    with pytest.raises(FileNotFoundError):
        storage.download(media, "a/missing.bin", tmp_path / "down" / "missing.bin")
    assert not (tmp_path / "down" / "missing.bin").exists() and not list(copy.parent.glob(".*"))

    folder = tmp_path / "run"
    (folder / "checkpoints" / "step-000002").mkdir(parents=True)
    (folder / "checkpoints" / "step-000002" / "state.json").write_text('{"step": 2}')
    (folder / "adapter.bin").write_bytes(b"v1")
    (folder / "checkpoints" / ".step-000004.partial").mkdir()  # a checkpoint being written: not sent
    (folder / "checkpoints" / ".step-000004.partial" / "state.json").write_text("{}")
    artifacts = storage.artifacts()
    mirror = storage.Mirror(artifacts, "runs/9", folder)
    assert mirror.push() == 2
    assert bucket_keys(s3, "artifacts/") == [
        "artifacts/runs/9/adapter.bin", "artifacts/runs/9/checkpoints/step-000002/state.json",
    ]  # fmt: skip
    assert mirror.push() == 0  # nothing changed, nothing sent
    (folder / "adapter.bin").write_bytes(b"version 2")
    shutil.rmtree(folder / "checkpoints" / "step-000002")  # pruned locally: deleted in the store
    assert mirror.push() == 1
    assert bucket_keys(s3, "artifacts/") == ["artifacts/runs/9/adapter.bin"]
    elsewhere = storage.Mirror(artifacts, "runs/9", tmp_path / "other-host")
    assert elsewhere.pull() == 1 and (tmp_path / "other-host" / "adapter.bin").read_bytes() == b"version 2"
    assert elsewhere.pull() == 0
    assert storage.delete_tree(artifacts, "runs/9") == 1 and bucket_keys(s3, "artifacts/") == []


@pytest.fixture
def judged(project, lead, make_user) -> list[Pair]:
    """40 imported pairs of `project`, each judged A by three annotators (A is the right sum)."""
    batch = batches.batch_create(
        project=project, user=lead, upload=io.BytesIO(_pairs_jsonl(40)), source_name="pairs.jsonl",
        size=len(_pairs_jsonl(40)), skip_invalid=False,
    )  # fmt: skip
    batches.batch_run(batch)
    people = raters(make_user, project, 3)
    pairs = list(Pair.objects.filter(project=project))
    for pair in pairs:
        for user in people:
            vote(pair, user, "a")
    return pairs


def test_import_export_and_download_through_the_bucket_leave_no_file_on_the_web_disk(
    s3, settings, project, lead, judged, make_user
):
    batch = ImportBatch.objects.get(project=project)
    assert batch.imported == 40 and batch.file.name.startswith("imports/")
    assert f"media/{batch.file.name}" in bucket_keys(s3)
    snapshot = snapshot_start(
        project=project,
        user=lead,
        rules=rules_for(project),
        shape="standard",
        fmt="jsonl",
        eval_fraction=0.25,
    )
    snapshot.refresh_from_db()
    assert snapshot.state == ExportSnapshot.State.DONE, snapshot.message
    keys = bucket_keys(s3, f"media/{snapshot.directory}/")
    assert keys == [f"media/{snapshot.directory}/eval.jsonl", f"media/{snapshot.directory}/train.jsonl"]
    assert not Path(settings.MEDIA_ROOT).exists()  # nothing written under the web's own folder
    assert not list((Path(settings.PREFSTUDIO_CACHE_DIR) / "exports").iterdir())  # staging removed

    client = Client()
    client.force_login(lead)
    url = reverse("labeling:export-download", args=[project.slug, snapshot.uuid, "train.jsonl"])
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    info = next(f for f in snapshot.files if f["name"] == "train.jsonl")
    assert hashlib.sha256(body).hexdigest() == info["sha256"] and int(response["Content-Length"]) == len(body)
    assert len(body.splitlines()) == snapshot.train_rows and snapshot.train_rows + snapshot.eval_rows == 40

    settings.PREFSTUDIO_PRESIGNED_DOWNLOADS = True
    redirected = client.get(url)
    assert redirected.status_code == 302 and redirected["Location"].startswith(s3["AWS_S3_ENDPOINT_URL"])
    assert "X-Amz-Expires=300" in redirected["Location"]
    with urllib.request.urlopen(redirected["Location"], timeout=10) as presigned:
        assert presigned.read() == body
        assert presigned.headers["Content-Disposition"] == (
            f'attachment; filename="{project.slug}-{str(snapshot.uuid)[:8]}-train.jsonl"'
        )
    outsider = Client()
    outsider.force_login(make_user("eve", "annotator"))
    assert outsider.get(url).status_code in (403, 404)  # the check comes before any URL is signed
    assert client.get(url.replace("train.jsonl", "nope.jsonl")).status_code == 404

    snapshot_delete(snapshot)
    assert bucket_keys(s3, f"media/{snapshot.directory}/") == []


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_workers_that_share_no_folder_with_the_web_import_export_train_and_the_web_serves_the_adapter(
    s3, settings, training_queue, tiny_base, project, lead, admin_user, make_user, tmp_path
):
    """The web process (this test) and two worker processes (the default queue: imports and exports; the
    training queue) have separate MEDIA_ROOT, ARTIFACT_ROOT and cache folders: only the bucket joins them."""
    host = {
        **s3,
        "MEDIA_ROOT": str(tmp_path / "host" / "media"),
        "ARTIFACT_ROOT": str(tmp_path / "host" / "artifacts"),
        "PREFSTUDIO_CACHE_DIR": str(tmp_path / "host" / "cache"),
        "PREFSTUDIO_IMPORT_SYNC_MAX_BYTES": "0",
    }
    django_rq.get_queue("default").empty()
    data = _pairs_jsonl(40)
    batch = batches.batch_create(
        project=project, user=lead, upload=io.BytesIO(data), source_name="pairs.jsonl", size=len(data),
        skip_invalid=False,
    )  # fmt: skip
    assert batches.batch_claim(batch, background=True)
    batches.batch_enqueue(batch)
    worker = start_worker("default", burst=True, **host)
    assert worker.wait(timeout=120) == 0, worker_log("default")
    batch.refresh_from_db()
    assert batch.state == ImportBatch.State.DONE and batch.imported == 40, batch.message
    people = raters(make_user, project, 3)
    for pair in Pair.objects.filter(project=project):
        for user in people:
            vote(pair, user, "a")

    snapshot = snapshot_start(
        project=project, user=lead, rules=rules_for(project), shape="standard", fmt="jsonl",
        eval_fraction=0.25, in_worker=True,
    )  # fmt: skip
    worker = start_worker("default", burst=True, **host)
    assert worker.wait(timeout=120) == 0, worker_log("default")
    snapshot.refresh_from_db()
    assert snapshot.state == ExportSnapshot.State.DONE, snapshot.message
    assert len(bucket_keys(s3, f"media/{snapshot.directory}/")) == 2

    run = services.run_create(snapshot=snapshot, user=admin_user, base_model=tiny_base,
                              config={**TINY, "max_steps": 4}, check_data=False)  # fmt: skip
    worker = start_worker(training_queue, burst=True, **host)
    assert worker.wait(timeout=240) == 0, worker_log(training_queue)
    run.refresh_from_db()
    assert run.state == TrainingRun.State.SUCCEEDED and run.step == 4, run.error
    stored = bucket_keys(s3, f"artifacts/runs/{run.pk}/")
    for name in ("adapter_config.json", "adapter_model.safetensors", "run_card.json", "run_card.md"):
        assert f"artifacts/runs/{run.pk}/{name}" in stored
    assert any("/checkpoints/step-" in key for key in stored)
    # The worker's copies lived in its own cache; the web's folders hold nothing.
    assert (tmp_path / "host" / "cache" / "artifacts" / "runs" / str(run.pk) / "run_card.json").is_file()
    for folder in (settings.MEDIA_ROOT, settings.ARTIFACT_ROOT):
        assert not Path(folder).exists() or not any(Path(folder).rglob("*.*"))

    client = Client()
    client.force_login(admin_user)
    page = client.get(run.get_absolute_url())
    assert b"adapter_model.safetensors" in page.content
    response = client.get(reverse("training:run-download", args=[run.pk]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = {Path(n).name for n in archive.namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors", "run_card.json"} <= names
    assert not any("checkpoints" in n or "reference_logps" in n for n in archive.namelist())
    card = json.loads(archive.read(f"prefstudio-run-{run.pk}/run_card.json"))
    assert card["hardware"]["processes"] == 1 and run.world_size == 1
    # A model reference to the run loads on this host from the bucket (generation, judges).
    from generation.registry import resolve

    spec = resolve(f"run:{run.pk}")
    assert Path(spec.local_adapter(), "adapter_config.json").is_file()


@pytest.mark.django_db(transaction=True)
def test_a_run_resumed_on_a_host_without_its_files_downloads_the_last_checkpoint(
    s3, settings, training_queue, tiny_base, project, admin_user, monkeypatch, tmp_path
):
    """A run canceled after step 3 on one host (its checkpoint uploaded) resumes on another host, whose
    cache is empty, after that checkpoint, and ends at step 6."""
    settings.PREFSTUDIO_CACHE_DIR = tmp_path / "first-host"
    run = services.run_create(snapshot=make_snapshot(project), user=admin_user, base_model=tiny_base,
                              config={**TINY, "max_steps": 6}, check_data=False)  # fmt: skip
    django_rq.get_queue(training_queue).empty()  # the first attempt runs here, not through its job

    def record(run_id, kind, step, values):
        services.record_metric(run_id, kind, step, values)
        if kind == "train" and step == 3:  # as if an admin pressed Cancel during this step
            TrainingRun.objects.filter(pk=run_id).update(cancel_requested_at=timezone.now())

    monkeypatch.setattr(runner, "record_metric", record)
    assert runner.execute(run.pk) == "canceled"
    monkeypatch.undo()
    run.refresh_from_db()
    stopped_at = run.step
    assert services.checkpoint_step(run) == stopped_at  # read from the bucket
    assert any(f"checkpoints/step-{stopped_at:06d}/" in key for key in bucket_keys(s3, "artifacts/"))

    settings.PREFSTUDIO_CACHE_DIR = tmp_path / "second-host"  # nothing of the run on this disk
    before = timezone.now()
    services.run_resume(run)
    worker_for(training_queue, worker_class="rq.SimpleWorker").work(burst=True)
    run.refresh_from_db()
    assert run.state == "succeeded" and run.step == 6 and run.attempts == 2, run.error
    redone = sorted(run.metrics.filter(kind="train", created_at__gte=before).values_list("step", flat=True))
    assert redone == list(range(stopped_at + 1, 7))
    assert "Downloaded" in run.log_tail and "Resuming" in run.log_tail
    copy = tmp_path / "second-host" / "media" / run.snapshot.directory / "train.jsonl"
    assert copy.is_file()  # the snapshot came down to this host too, under its stored name
    assert f"{run.snapshot.directory}/train.jsonl" in json.dumps(run.data_report)  # named as stored


def test_the_local_filesystem_stays_the_default(settings, tmp_path):
    media, artifacts = storage.media(), storage.artifacts()
    assert not storage.is_remote(media) and not storage.is_remote(artifacts)
    assert storage.local_path(artifacts, "runs/1") == Path(settings.ARTIFACT_ROOT) / "runs" / "1"
    assert storage.local_path(media, "exports/x") == Path(settings.MEDIA_ROOT) / "exports" / "x"
    media.save("exports/x/a.txt", ContentFile(b"hi"))
    mirror = storage.Mirror(media, "exports/x", Path(settings.MEDIA_ROOT) / "exports" / "x")
    assert mirror.push() == 0 and mirror.pull() == 0  # the folder is the storage: nothing to copy


@pytest.mark.django_db
def test_the_web_data_check_fetches_only_the_rows_it_reads_from_the_bucket(s3, settings, tiny_base, project):
    settings.PREFSTUDIO_DATA_CHECK_MAX_ROWS = 5
    snapshot = make_snapshot(project)
    check = services.data_check(snapshot=snapshot, base_model=tiny_base, config=TINY)
    assert check.get("usable") is True, check
    assert check["splits"]["train"]["rows"] == 5
    cache = Path(settings.PREFSTUDIO_CACHE_DIR)
    fetched = cache / "data-check" / str(snapshot.uuid) / "5" / "train.jsonl"
    assert len(fetched.read_text().splitlines()) == 5
    assert not (cache / "media").exists()  # the whole snapshot never came down to the web process
