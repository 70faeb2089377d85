"""Faults the app must work through: Redis down, a terminated database connection in a worker, a full
disk, a killed work horse. Each is produced for real (a closed port, `pg_terminate_backend`, a storage
whose writes fail with ENOSPC, SIGKILL) and each test checks what the user is told and that nothing was
lost or half-written."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import connection
from django.test import Client

from labeling.models import ExportSnapshot, ImportBatch, Judgment, Membership, Pair
from prefstudio import jobs
from tests.conftest import PASSWORD, worker_for
from tests.labeling.test_assignment import make_pairs
from tests.workers import ROOT, database_url, needs_postgres, wait_for

CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(n: int, tag: str = "q") -> bytes:
    return "".join(
        json.dumps({"prompt": f"{tag}{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n"
        for i in range(n)
    ).encode()


# -- Redis down ---------------------------------------------------------------------------------------


@pytest.fixture
def server_without_redis(transactional_db, tmp_path):
    """gunicorn with the shipped settings (DEBUG off), on this test's database, with REDIS_URL on a closed
    port; every import and export is big enough to need a worker."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": CLOSED_REDIS,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "STATIC_ROOT": str(tmp_path / "static"),
        "WEB_CONCURRENCY": "1",
        "PREFSTUDIO_IMPORT_SYNC_MAX_BYTES": "10",
        "PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS": "0",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [gunicorn, "--bind", f"127.0.0.1:{port}", "prefstudio.wsgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=10).status_code in (200, 503)
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=60, what="gunicorn")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
        text = (tmp_path / "gunicorn.log").read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]


def _login(base: str, username: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=10)
    response = session.post(
        f"{base}/login/",
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/login/"},
        timeout=10,
    )
    assert response.status_code == 200 and "/login/" not in response.url, response.text[:500]
    return session


def _post(
    session: requests.Session, base: str, path: str, data: dict | None = None, **kwargs
) -> requests.Response:
    data = {**(data or {}), "csrfmiddlewaretoken": session.cookies["csrftoken"]}
    return session.post(
        f"{base}{path}", data=data, headers={"Referer": f"{base}{path}"}, timeout=20, **kwargs
    )


@needs_postgres
def test_with_redis_down_people_log_in_judge_review_and_are_told_what_needs_the_queue(
    server_without_redis, project, annotator, lead, make_user
):
    base = server_without_redis
    make_pairs(project, 4)
    admin = make_user("ada", "admin", is_staff=True, is_superuser=True)
    Membership.objects.create(project=project, user=admin, role=Membership.Role.LEAD)

    health = requests.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 503 and "redis" in health.text.lower()

    ann = _login(base, annotator.username)
    page = ann.get(f"{base}/projects/{project.slug}/label/", timeout=20)
    assert page.status_code == 200, page.text[:500]
    action = re.search(r'action="(/projects/alpha/label/\d+/judge/)"', page.text).group(1)
    judged = _post(ann, base, action, {"choice": "left", "active_seconds": "3"})
    assert judged.status_code == 200 and Judgment.objects.count() == 1

    leader = _login(base, lead.username)
    for path in (f"/projects/{project.slug}/review/", f"/projects/{project.slug}/export/",
                 f"/projects/{project.slug}/"):  # fmt: skip
        response = leader.get(f"{base}{path}", timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])

    # An export that needs a worker: refused with the message, nothing stored.
    form = {"min_judgments": "1", "min_share": "0.5", "method": "majority", "min_posterior": "0.8",
            "shape": "standard", "format": "jsonl", "eval_fraction": "0",
            "include_metadata": "on"}  # fmt: skip
    export = _post(leader, base, f"/projects/{project.slug}/export/new/", form)
    assert export.status_code == 503 and jobs.QUEUE_UNAVAILABLE in export.text.replace("&#x27;", "'")
    assert not ExportSnapshot.objects.exists()

    # A large import: uploaded and previewed, but "Import" is refused and the batch waits, unharmed.
    admin_session = _login(base, admin.username)
    for path in ("/training/", "/training/runs/new/"):
        response = admin_session.get(f"{base}{path}", timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    upload = admin_session.get(f"{base}/projects/{project.slug}/import/", timeout=10)
    assert upload.status_code == 200
    response = _post(admin_session, base, f"/projects/{project.slug}/import/",
                     files={"file": ("big.jsonl", io.BytesIO(_rows(20)), "application/jsonl")})  # fmt: skip
    assert response.status_code == 200, response.text[:500]
    batch = ImportBatch.objects.get(source_name="big.jsonl")
    commit = _post(admin_session, base, f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    assert commit.status_code == 200 and jobs.QUEUE_UNAVAILABLE in commit.text.replace("&#x27;", "'")
    batch.refresh_from_db()
    assert batch.state == ImportBatch.State.UPLOADED and not batch.job_id
    assert Pair.objects.filter(batch=batch).count() == 0

    # A training run: refused with the message, nothing stored.
    from training.models import TrainingRun

    runs = _post(admin_session, base, "/training/runs/new/", {"action": "create"})
    assert runs.status_code in (200, 400) and not TrainingRun.objects.exists()


# -- A worker's database connection terminated ----------------------------------------------------------


def _terminate_our_connection() -> None:
    """End this process's database session from another connection, as a restarted server, an idle
    timeout or `pg_terminate_backend` by an operator would: Django's connection does not know yet."""
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)


def _upload(project, name: str, rows: int) -> ImportBatch:
    from labeling.batches import batch_claim, batch_create

    data = _rows(rows, tag=name)
    batch = batch_create(project=project, user=None, upload=io.BytesIO(data), source_name=name,
                         size=len(data), skip_invalid=False)  # fmt: skip
    assert batch_claim(batch, background=True)
    return batch


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_connection_was_terminated_between_jobs_imports_the_next_file(project):
    """A worker that keeps its connection between jobs (RQ's SimpleWorker: no fork) had every later job
    fail on the dead connection until it was restarted; the job machinery reconnects first."""
    from rq import SimpleWorker

    from labeling.batches import batch_enqueue

    worker = worker_for("default", worker_class=SimpleWorker)
    first = _upload(project, "first.jsonl", 5)
    batch_enqueue(first)
    worker.work(burst=True)
    first.refresh_from_db()
    assert first.state == ImportBatch.State.DONE, first.message

    second = _upload(project, "second.jsonl", 3)
    batch_enqueue(second)
    _terminate_our_connection()
    worker.work(burst=True)
    second.refresh_from_db()
    assert second.state == ImportBatch.State.DONE, second.message
    assert Pair.objects.filter(batch=second).count() == 3


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_that_loses_its_connection_mid_way_is_retried_once_and_imports_once(project, monkeypatch):
    from rq import SimpleWorker

    from labeling import batches

    real, calls = batches.import_stream, []

    def losing_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            _terminate_our_connection()  # the import's first query finds the connection gone
        return real(**kwargs)

    monkeypatch.setattr(batches, "import_stream", losing_once)
    batch = _upload(project, "flaky.jsonl", 4)
    batches.batch_enqueue(batch)
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    batch.refresh_from_db()
    assert len(calls) == 2
    assert batch.state == ImportBatch.State.DONE, batch.message
    assert batch.message == "4 pairs imported from 4 records."
    assert Pair.objects.filter(batch=batch).count() == 4 and Pair.objects.count() == 4


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_failing_for_another_reason_is_not_retried_and_says_why_in_one_line(project, monkeypatch):
    from rq import SimpleWorker

    from labeling import batches

    calls = []

    def broken(**kwargs):
        calls.append(1)
        raise RuntimeError(f"boom in {ROOT}/labeling/batches.py\nsecond line")

    monkeypatch.setattr(batches, "import_stream", broken)
    batch = _upload(project, "broken.jsonl", 2)
    batches.batch_enqueue(batch)
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    batch.refresh_from_db()
    assert len(calls) == 1 and batch.state == ImportBatch.State.FAILED
    assert batch.message.startswith("The import of broken.jsonl failed: RuntimeError: boom")
    assert "\n" not in batch.message and "Traceback" not in batch.message


def test_a_job_that_was_killed_is_told_in_one_line_without_its_traceback():
    record = (
        'Traceback (most recent call last):\n  File "/srv/prefstudio/labeling/batches.py", line 3\n'
        "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); "
    )
    assert jobs.reason_from_exc_info(record, what="The import") == (
        "The import stopped: its worker process was killed (waitpid returned 9 (signal 9))."
    )
    last = jobs.reason_from_exc_info("Traceback ...\n  File x\nValueError: bad row", what="The export")
    assert last == "The export failed: ValueError: bad row"


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_batch_page_shows_leads_one_line_and_admins_a_link_to_the_traceback(
    project, lead, make_user, monkeypatch
):
    from rq import SimpleWorker

    from labeling import tasks
    from labeling.batches import batch_enqueue

    def crash(*args, **kwargs):
        raise MemoryError(f"out of memory\n  at {ROOT}/labeling/batches.py")

    monkeypatch.setattr(tasks, "batch_run", crash)  # dies outside the import's own error handling
    batch = _upload(project, "gone.jsonl", 2)
    batch_enqueue(batch)
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    batch.refresh_from_db()
    assert batch.state == ImportBatch.State.FAILED
    assert batch.message == "The import failed: MemoryError: out of memory Import the file again."
    client = Client()
    client.force_login(lead)
    body = client.get(batch.get_absolute_url()).content.decode()
    assert batch.message in body
    assert "Traceback" not in body and str(ROOT) not in body and "(admins)" not in body
    admin = make_user("ada", "admin", is_staff=True, is_superuser=True)
    client.force_login(admin)
    body = client.get(batch.get_absolute_url()).content.decode()
    assert f"/admin/rq/queues/0/{batch.job_id}/" in body
    assert client.get(f"/admin/rq/queues/0/{batch.job_id}/").status_code == 200  # django-rq's job page


# -- A full disk ------------------------------------------------------------------------------------------


class _FullDisk(FileSystemStorage):
    """A storage whose disk fills up after `room` bytes of a file were written."""

    room = 100

    def _save(self, name, content):
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(content.read(self.room))
            raise OSError(errno.ENOSPC, "No space left on device", path)


@pytest.mark.django_db
def test_an_upload_to_a_full_disk_says_so_and_leaves_no_file(project, admin_client, monkeypatch, settings):
    from labeling.models import ImportBatch as Batch

    field = Batch._meta.get_field("file")
    monkeypatch.setattr(field, "storage", _FullDisk(location=settings.MEDIA_ROOT))
    response = admin_client.post(
        f"/projects/{project.slug}/import/",
        {"file": _named(io.BytesIO(_rows(30)), "data.jsonl")},
    )
    assert response.status_code == 200
    assert "The server is out of disk space" in response.content.decode()
    assert not Batch.objects.exists()
    imports = Path(settings.MEDIA_ROOT) / "imports"
    assert not imports.exists() or not any(p.is_file() for p in imports.rglob("*"))


def _named(stream: io.BytesIO, name: str) -> io.BytesIO:
    stream.name = name
    return stream


@pytest.mark.django_db
def test_the_sweep_removes_upload_files_that_belong_to_no_batch(project, settings):
    from datetime import timedelta

    from labeling.batches import batch_create, uploads_sweep

    batch = batch_create(project=project, user=None, upload=io.BytesIO(_rows(2)), source_name="kept.jsonl",
                         size=10, skip_invalid=False)  # fmt: skip
    orphan = Path(settings.MEDIA_ROOT) / "imports" / str(project.pk) / "0000-orphan.upload"
    orphan.write_bytes(b"partial")
    fresh = orphan.with_name("1111-in-flight.upload")
    fresh.write_bytes(b"being written")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    assert uploads_sweep(older_than=timedelta(minutes=10)) == 1
    assert not orphan.exists() and fresh.exists() and Path(batch.file.path).exists()


def test_a_run_that_fills_the_disk_says_the_disk_is_full_and_where(settings, tmp_path, monkeypatch):
    from training import runner

    monkeypatch.setattr(runner, "_disk_nearly_full", lambda: True)
    torch_error = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 28800 vs 28688")
    message = runner._explain(torch_error)
    assert message.startswith("The disk is full: the run could not write to the artifact storage")
    assert "Resume" in message
    enospc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "adapter.safetensors"))
    assert runner._explain(enospc).startswith("The disk is full")
    monkeypatch.setattr(runner, "_disk_nearly_full", lambda: False)
    assert runner._explain(torch_error).startswith("RuntimeError: ")  # not a full disk: said as it is
