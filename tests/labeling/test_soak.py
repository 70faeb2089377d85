"""Soak: 50 simulated annotators judge without pause while an admin imports hostile files (texts that
are slow to render, a gzip that expands past the cap, Parquet with invalid UTF-8). Afterwards every
judgment an annotator was told was stored is in the database, none twice, no request failed and none
waited long. Real threads against PostgreSQL; judging goes on while the imports run (their length depends
on the machine) and stops a few seconds after them, two minutes at the latest."""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import Count
from django.test import Client

from labeling.display import render_missing
from labeling.models import Assignment, ImportBatch, Judgment, Pair, Project
from tests.labeling.test_assignment import annotators, make_pairs

pytestmark = pytest.mark.django_db(transaction=True)
ANNOTATORS = 50
# Annotators judge until the admin's imports are over and then a few seconds more (so that they reach
# the imported pairs), or until the cap: how long that takes depends on the machine, not the outcome.
AFTER_IMPORT_SECONDS = 5
JUDGING_CAP_SECONDS = 120
# Seconds. Anything near gunicorn's 120 s kill would have lost judgments (a hostile render took tens of
# seconds). Here 51 threads share one interpreter lock on a machine CI also loads, so a request's
# wall time includes waiting for its turn: 10-11 s was seen in CI, 3.7-5 s on a quiet machine.
SLOW_REQUEST = 30.0
_ACTION = re.compile(r'action="/projects/[\w-]+/label/(\d+)/judge/"')


@dataclass
class Annotated:
    """What one simulated annotator saw: the assignments whose judgment came back stored, the
    slowest request, and any request that failed."""

    stored: list[int] = field(default_factory=list)
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)


class Clock:
    """When judging stops: AFTER_IMPORT_SECONDS after the imports end, JUDGING_CAP_SECONDS at the latest."""

    def __init__(self) -> None:
        self.cap = time.monotonic() + JUDGING_CAP_SECONDS
        self.imports_done: float | None = None

    def running(self) -> bool:
        now = time.monotonic()
        done = self.imports_done
        return now < self.cap and (done is None or now < done + AFTER_IMPORT_SECONDS)


def judge_until(client: Client, slug: str, clock: Clock, seen: Annotated) -> None:
    def timed(call, *args, **kwargs):
        start = time.monotonic()
        response = call(*args, HTTP_HX_REQUEST="true", **kwargs)
        seen.slowest = max(seen.slowest, time.monotonic() - start)
        if response.status_code != 200:
            seen.failures.append(f"{args[0]}: {response.status_code}")
        return response

    body = ""
    while clock.running():
        if not (match := _ACTION.search(body)):  # nothing left for now: look again, as people do
            time.sleep(0.5 if body else 0)
            body = timed(client.get, f"/projects/{slug}/label/").content.decode()
            continue
        assignment = int(match.group(1))
        response = timed(client.post, f"/projects/{slug}/label/{assignment}/judge/", {"choice": "left"})
        if response.status_code != 200:
            return
        seen.stored.append(assignment)
        body = response.content.decode()


def hostile_files() -> list[tuple[str, bytes]]:
    slow = "![" * 30_000  # about 10 s per text for markdown-it; over the render budget
    records = [
        {"prompt": f"{slow} {i}", "response_a": f"{slow} a{i}", "response_b": f"{'[' * 60_000} b{i}"}
        for i in range(20)
    ] + [{"prompt": f"Fresh {i}?", "response_a": f"Yes {i}", "response_b": f"No {i}"} for i in range(200)]
    pad = json.dumps({"prompt": "x", "pad": " " * 100_000}).encode() + b"\n"
    bad = pa.array([b"ok", b"bad \xff"], pa.binary()).view(pa.string())
    parquet = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["p", "q"], "response_a": bad, "response_b": ["x", "y"]}), parquet)
    return [
        ("hostile.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in records)),
        ("bomb.jsonl.gz", gzip.compress(pad * 400)),  # 40 MB unpacked, past the 8 MB cap below
        ("bad.parquet", parquet.getvalue()),
    ]


def import_hostile_files(admin, project: Project, outcome: dict, clock: Clock) -> None:
    client = Client()
    client.force_login(admin)
    try:
        for name, data in hostile_files():
            client.post(f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile(name, data)})
            batch = ImportBatch.objects.get(source_name=name)
            client.get(batch.get_absolute_url())  # the preview
            client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
            batch.refresh_from_db()
            outcome[name] = (batch.state, batch.message)
            if batch.state == "done":  # what the render job does after an import, here in this thread
                render_missing(Pair.objects.filter(batch=batch))
    except Exception as exc:  # reported by the test, not lost in a thread
        outcome["error"] = repr(exc)
    finally:
        clock.imports_done = time.monotonic()
        connection.close()


def test_fifty_annotators_judge_while_an_admin_imports_hostile_files(make_user, admin_user, settings):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrency needs PostgreSQL; CI runs on PostgreSQL")
    settings.PREFSTUDIO_IMPORT_SYNC_MAX_BYTES = 64 << 20  # the hostile import runs inside its request
    settings.PREFSTUDIO_MAX_UNPACKED_BYTES = 8 << 20
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # 50 users, quickly
    project = Project.objects.create(slug="soak", name="Soak", overlap=3)
    make_pairs(project, 300)
    render_missing(Pair.objects.filter(project=project))
    users = annotators(make_user, project, ANNOTATORS)
    clock = Clock()
    seen = [Annotated() for _ in users]
    outcome: dict = {}

    def annotate(i: int) -> None:
        client = Client()
        client.force_login(users[i])
        try:
            judge_until(client, project.slug, clock, seen[i])
        except Exception as exc:
            seen[i].failures.append(repr(exc))
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(ANNOTATORS)]
    threads.append(threading.Thread(target=import_hostile_files, args=(admin_user, project, outcome, clock)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JUDGING_CAP_SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads)
    elapsed = time.monotonic() - started

    assert clock.imports_done is not None and clock.imports_done < clock.cap, "the imports did not end"
    failures = [f for s in seen for f in s.failures]
    stored = [a for s in seen for a in s.stored]
    assert failures == [] and "error" not in outcome, (failures[:5], outcome)
    # Every judgment an annotator was told was stored is there, once, on the assignment they judged.
    assert len(stored) == len(set(stored)) > 900  # past the first 300 pairs: into the imported ones
    assert Judgment.objects.filter(assignment_id__in=stored).count() == len(stored)
    assert Judgment.objects.count() == len(stored)
    assert Assignment.objects.filter(pk__in=stored).exclude(state="done").count() == 0
    over = Pair.objects.annotate(n=Count("judgments")).filter(n__gt=project.overlap).count()
    assert over == 0
    assert max(s.slowest for s in seen) < SLOW_REQUEST, max(s.slowest for s in seen)
    # The admin's files: the hostile texts imported (and shown as plain text), the others refused.
    assert outcome["hostile.jsonl"][0] == "done"
    assert outcome["bomb.jsonl.gz"] == ("failed", outcome["bomb.jsonl.gz"][1])
    assert "PREFSTUDIO_MAX_UNPACKED_BYTES" in outcome["bomb.jsonl.gz"][1]
    assert outcome["bad.parquet"][0] == "failed"
    hostile = Pair.objects.filter(batch__source_name="hostile.jsonl", response_a__startswith="![")
    assert hostile.count() == 20 and all("render-note" in p.rendered["a"] for p in hostile)
    assert Judgment.objects.filter(pair__in=hostile).exists()  # annotators were given hostile pairs
    slowest = max(s.slowest for s in seen)
    print(f"soak: {len(stored)} judgments stored in {elapsed:.1f} s, slowest request {slowest:.2f} s")
