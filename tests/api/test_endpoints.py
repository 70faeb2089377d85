"""The JSON API's endpoints: who may call each (as the pages decide), what each answers, and the one
error shape. Every refused call is checked to change nothing in the database."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import django_rq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test.client import MULTIPART_CONTENT
from rq.job import Job

from api.errors import ALWAYS
from evaluation.models import EvaluationRound
from evaluation.services import round_results
from generation.models import GenerationJob
from labeling.models import ExportSnapshot, ImportBatch, Judgment, Pair, Project
from prefstudio import jobs
from tests.api.conftest import API, Api, World, database_state, token
from training.models import RunMetric, TrainingRun

pytestmark = pytest.mark.django_db

GOOD_JSONL = (
    b'{"prompt": "Q1", "response_a": "yes", "response_b": "no"}\n'
    b'{"prompt": "Q2", "response_a": "a", "response_b": "b"}\n'
)
# Line 2: a number for a response; line 3: no response B.
BAD_JSONL = (
    b'{"prompt": "Q1", "response_a": "yes", "response_b": "no"}\n'
    b'{"prompt": "Q2", "response_a": "a", "response_b": 7}\n'
    b'{"prompt": "Q3", "response_a": "a"}\n'
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    # Who may call it: "label" (every role), "lead" (review, export: a project's leads and admins),
    # "train" (admins, and whoever holds the training permission), "import" (admins).
    level: str
    body: Any = None
    listing: bool = False  # a list: callers of the level get 200 with what they may see

    def url(self, world: World) -> str:
        return self.path.format(
            slug=world.project.slug, batch=world.batch.uuid, export=world.snapshot.uuid, run=world.run.pk,
            done_run=world.done_run.pk, job=world.job.pk, round=world.round.pk, name="train.jsonl",
        )  # fmt: skip

    def send(self, client: Api, world: World):
        body = self.body(world) if callable(self.body) else self.body
        if isinstance(body, bytes):
            return client.post(self.url(world), body, content_type="application/x-ndjson")
        return client.call(self.method, self.url(world), body)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "/projects", "label", listing=True),
    Endpoint("GET", "/projects/{slug}", "label"),
    Endpoint("GET", "/projects/{slug}/agreement", "lead"),
    Endpoint("POST", "/projects/{slug}/imports", "import", GOOD_JSONL),
    Endpoint("GET", "/projects/{slug}/imports", "lead"),
    Endpoint("GET", "/projects/{slug}/imports/{batch}", "lead"),
    Endpoint("POST", "/projects/{slug}/exports", "lead", {}),
    Endpoint("GET", "/projects/{slug}/exports", "lead"),
    Endpoint("GET", "/projects/{slug}/exports/{export}", "lead"),
    Endpoint("GET", "/projects/{slug}/exports/{export}/files/{name}", "lead"),
    Endpoint(
        "POST", "/training/runs", "train", lambda w: {"snapshot": str(w.snapshot.uuid), "base_model": "tiny"}
    ),
    Endpoint("GET", "/training/runs", "train", listing=True),
    Endpoint("GET", "/training/runs/{run}", "train"),
    Endpoint("POST", "/training/runs/{run}/cancel", "train"),
    Endpoint("POST", "/training/runs/{run}/resume", "train"),
    Endpoint("GET", "/training/runs/{done_run}/download", "train"),
    Endpoint(
        "POST",
        "/generation/jobs",
        "lead",
        lambda w: {
            "project": w.project.slug,
            "models": ["base:tiny"],
            "source": "prompts",
            "prompts": ["Hi"],
        },
    ),  # fmt: skip
    Endpoint("GET", "/generation/jobs", "lead", listing=True),
    Endpoint("GET", "/generation/jobs/{job}", "lead"),
    Endpoint("POST", "/generation/jobs/{job}/cancel", "lead"),
    Endpoint("POST", "/generation/jobs/{job}/resume", "lead"),
    Endpoint("GET", "/evaluation/rounds", "lead", listing=True),
    Endpoint("GET", "/evaluation/rounds/{round}", "lead"),
]


def test_the_table_covers_every_operation_of_the_api(client):
    paths = client.get(f"{API}/openapi.json").json()["paths"]  # served without a token
    operations = {
        _shape(f"{method.upper()} {path.removeprefix(API)}") for path, ops in paths.items() for method in ops
    }
    assert operations == {_shape(str(e)) for e in ENDPOINTS}


def _shape(operation: str) -> str:
    return re.sub(r"\{[^}]+\}", "*", operation)


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str) and body["detail"]
    assert all(set(e) == {"loc", "msg"} and isinstance(e["loc"], list) for e in body["errors"])
    return body


@pytest.mark.parametrize("who", ["none", "revoked", "expired", "forged"])
def test_no_token_or_a_dead_one_is_401_and_changes_nothing(who, world, dead_tokens):
    client = Api(None if who == "none" else dead_tokens[who])
    for endpoint in ENDPOINTS:
        before = database_state()
        response = endpoint.send(client, world)
        assert_error(response, 401)
        assert response["WWW-Authenticate"] == "Bearer", endpoint
        assert database_state() == before, endpoint


def expected_refusal(endpoint: Endpoint, caller: str) -> int | None:
    """The status the pages' rules give `caller` (None: allowed). "outsider" leads the other project;
    "trainer" leads it too and may train."""
    if caller == "nobody":
        return 403
    allowed = {
        "label": {"annotator", "lead", "outsider", "trainer"},
        "lead": {"lead", "outsider", "trainer"},
        "train": {"trainer"},
        "import": set(),
    }[endpoint.level]
    if caller not in allowed:
        return 403
    if caller in ("outsider", "trainer") and not endpoint.listing:
        return 404  # the project, or the object in it, is not theirs
    return None


@pytest.mark.parametrize("caller", ["nobody", "annotator", "lead", "outsider", "trainer"])
def test_callers_without_the_permission_get_403_and_others_projects_404_and_nothing_changes(
    caller, world, users, outsiders
):
    user = {"nobody": users["none"], "annotator": users["annotator"], "lead": users["lead"],
            "outsider": outsiders["lead"], "trainer": outsiders["trainer"]}[caller]  # fmt: skip
    client = Api(token(user))
    refused = [(e, expected_refusal(e, caller)) for e in ENDPOINTS if expected_refusal(e, caller) is not None]
    assert refused
    for endpoint, status in refused:
        before = database_state()
        response = endpoint.send(client, world)
        assert response.status_code == status, (str(endpoint), response.content[:300])
        assert_error(response, status)
        assert database_state() == before, endpoint


def test_lists_show_others_nothing_of_the_project(world, outsiders, other_project, api_as):
    outsider, trainer = api_as(outsiders["lead"]), api_as(outsiders["trainer"])
    assert [p["slug"] for p in outsider.get("/projects").json()["items"]] == [other_project.slug]
    for path in ("/generation/jobs", "/evaluation/rounds"):
        assert outsider.get(path).json() == {"items": [], "count": 0}
    assert trainer.get("/training/runs").json() == {"items": [], "count": 0}


# Projects


def test_projects_are_the_members_own_and_read_as_the_project_page(world, other_project, users, api_as):
    annotator = api_as(users["annotator"])
    listed = annotator.get("/projects").json()
    assert listed["count"] == 1 and [p["slug"] for p in listed["items"]] == ["alpha"]
    project = annotator.get("/projects/alpha").json()
    assert project["rubric"] == "Prefer **correct** answers." and project["choices"] == [
        "a",
        "b",
        "tie",
        "both_bad",
    ]
    assert project["overlap"] == 3 and project["archived"] is False
    assert_error(annotator.get(f"/projects/{other_project.slug}"), 404)
    assert api_as(users["admin"]).get("/projects").json()["count"] == 2


def test_pagination_takes_limit_and_offset_and_counts_all(admin_user, api_as):
    for i in range(5):
        Project.objects.create(slug=f"p{i}", name=f"Project {i}")
    admin = api_as(admin_user)
    page = admin.get("/projects?limit=2&offset=1").json()
    assert page["count"] == 5 and [p["slug"] for p in page["items"]] == ["p1", "p2"]
    assert admin.get("/projects?offset=4").json()["items"][0]["slug"] == "p4"
    assert admin.get("/projects?offset=9").json() == {"items": [], "count": 5}
    for bad in ("limit=0", "limit=201", "offset=-1", "limit=x"):
        body = assert_error(admin.get(f"/projects?{bad}"), 422)
        assert body["errors"][0]["loc"][:2] == ["query", bad.split("=")[0]]


# Imports


def test_a_jsonl_body_is_imported_and_its_status_read(project, users, api_as):
    admin = api_as(users["admin"])
    response = admin.post(
        "/projects/alpha/imports?name=pairs.jsonl", GOOD_JSONL, content_type="application/x-ndjson"
    )
    assert response.status_code == 201, response.content
    batch = response.json()
    assert batch["state"] == "done" and batch["imported"] == 2 and batch["source_name"] == "pairs.jsonl"
    assert batch["format"] == "jsonl" and batch["project"] == "alpha"
    assert Pair.objects.filter(project=project).count() == 2
    status = api_as(users["lead"]).get(f"/projects/alpha/imports/{batch['uuid']}").json()
    assert status == {**batch, "progress": None}
    again = admin.post("/projects/alpha/imports", GOOD_JSONL, content_type="application/octet-stream").json()
    assert again["imported"] == 0 and again["duplicates"] == 2 and again["source_name"] == "request body"


def test_an_import_with_a_bad_line_returns_each_line_and_field_and_imports_nothing(project, users, api_as):
    before = database_state()
    response = api_as(users["admin"]).post(
        "/projects/alpha/imports?name=pairs.jsonl", BAD_JSONL, content_type="application/x-ndjson"
    )
    body = assert_error(response, 422)
    assert body["errors"] == [
        {"loc": ["body", "line", 2, "response_b"],
         "msg": "must be a string or a list of messages, got number"},
        {"loc": ["body", "line", 3, "response_b"], "msg": "is required"},
    ]  # fmt: skip
    assert body["detail"].startswith("Nothing imported: 2 of 3 records are invalid")
    assert database_state() == before  # not even the failed batch stays


def test_a_multipart_file_with_skip_invalid_imports_the_valid_records(project, users, api_as):
    upload = SimpleUploadedFile("pairs.jsonl", BAD_JSONL)
    response = api_as(users["admin"]).post(
        "/projects/alpha/imports?skip_invalid=true", {"file": upload}, content_type=MULTIPART_CONTENT
    )
    assert response.status_code == 201, response.content
    batch = response.json()
    assert (batch["imported"], batch["rejected"], batch["error_count"]) == (1, 2, 2)
    assert batch["source_name"] == "pairs.jsonl" and "line 2, field response_b" in batch["errors"][0]
    assert Pair.objects.filter(project=project).count() == 1


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [(b"", ["body", "file"], "is empty"), (b"hello there", ["body"], "unrecognized format")],
)
def test_what_is_no_dataset_is_422_and_stores_nothing(project, users, api_as, body, loc, words):
    before = database_state()
    response = api_as(users["admin"]).post("/projects/alpha/imports", body, content_type="text/plain")
    error = assert_error(response, 422)
    assert error["errors"][0]["loc"] == loc and words in error["detail"]
    assert database_state() == before


def test_a_body_over_the_upload_limit_is_413(project, users, api_as, settings):
    settings.PREFSTUDIO_MAX_UPLOAD_BYTES = 50
    response = api_as(users["admin"]).post("/projects/alpha/imports", GOOD_JSONL, content_type="text/plain")
    assert "upload limit" in assert_error(response, 413)["detail"]
    assert not ImportBatch.objects.exists()


def test_a_large_import_goes_to_a_worker_202_and_its_status_follows_the_job(
    project, users, api_as, settings, django_capture_on_commit_callbacks
):
    settings.PREFSTUDIO_IMPORT_SYNC_MAX_BYTES = 10
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(users["admin"]).post(
            "/projects/alpha/imports", GOOD_JSONL, content_type="text/plain"
        )
    assert response.status_code == 202, response.content
    batch = ImportBatch.objects.get(uuid=response.json()["uuid"])
    try:
        status = api_as(users["lead"]).get(f"/projects/alpha/imports/{batch.uuid}").json()
        assert status["state"] == "queued" and status["progress"] == 0, status["message"]
    finally:
        Job.fetch(batch.job_id, connection=django_rq.get_connection("default")).delete()


def test_an_import_the_queue_cannot_take_is_503_and_leaves_nothing(
    project, users, api_as, settings, monkeypatch
):
    settings.PREFSTUDIO_IMPORT_SYNC_MAX_BYTES = 10

    def unavailable(*args, **kwargs):
        raise jobs.QueueUnavailable("down")

    monkeypatch.setattr(jobs, "enqueue", unavailable)
    response = api_as(users["admin"]).post("/projects/alpha/imports", GOOD_JSONL, content_type="text/plain")
    assert "queue is unavailable" in assert_error(response, 503)["detail"]
    assert not ImportBatch.objects.exists()


def test_imports_are_listed_newest_first(world, users, api_as):
    api_as(users["admin"]).post("/projects/alpha/imports", GOOD_JSONL, content_type="text/plain")
    listed = api_as(users["lead"]).get("/projects/alpha/imports").json()
    assert listed["count"] == 2 and listed["items"][1]["uuid"] == str(world.batch.uuid)


# Agreement


def test_agreement_is_the_report_the_page_shows_and_the_command_prints(world, users, api_as, capsys):
    pair = world.batch.pairs.get()
    for user in (users["annotator"], users["lead"]):
        Judgment.objects.create(pair=pair, annotator=user, choice="a")
    lead = api_as(users["lead"])
    shown = lead.get("/projects/alpha/agreement").json()
    report = lead.get("/projects/alpha/agreement?refresh=true").json()
    assert report["computed_at"] > shown["computed_at"]
    call_command("agreement_report", "alpha", "--json")
    printed = json.loads(capsys.readouterr().out)
    assert (
        {**report, "computed_at": None} == {**printed, "computed_at": None} == {**shown, "computed_at": None}
    )
    assert report["headline"]["without_excluded"]["judgments"] == 2 and report["newer_judgments"] is None


# Exports


def test_an_export_is_made_with_the_rules_and_read_listed_and_downloaded(world, users, api_as):
    lead = api_as(users["lead"])
    response = lead.post(
        "/projects/alpha/exports", {"min_share": "1/2", "min_judgments": 1, "eval_fraction": 0}
    )
    assert response.status_code == 201, response.content
    made = response.json()
    assert made["state"] == "done" and made["rules"]["min_share"] == 0.5 and made["min_share_text"] == "1/2"
    assert made["rules"]["min_judgments"] == 1 and made["shape"] == "standard" and made["format"] == "jsonl"
    assert lead.get(f"/projects/alpha/exports/{made['uuid']}").json() == made
    listed = lead.get("/projects/alpha/exports").json()
    assert listed["count"] == 2 and listed["items"][0]["uuid"] == made["uuid"]
    kept = lead.get(f"/projects/alpha/exports/{world.snapshot.uuid}").json()
    assert [f["name"] for f in kept["files"]] == ["train.jsonl", "eval.jsonl"]
    download = lead.get(f"/projects/alpha/exports/{world.snapshot.uuid}/files/train.jsonl")
    assert download.status_code == 200 and download["Content-Type"] == "application/x-ndjson"
    assert len(b"".join(download.streaming_content).splitlines()) == 32
    assert_error(lead.get(f"/projects/alpha/exports/{world.snapshot.uuid}/files/other.jsonl"), 404)


def test_export_rules_out_of_range_are_400_or_422_at_their_field(world, users, api_as):
    lead = api_as(users["lead"])
    before = database_state()
    body = assert_error(lead.post("/projects/alpha/exports", {"min_share": "two thirds"}), 400)
    assert body["errors"][0]["loc"] == ["body", "min_share"] and "not a share" in body["errors"][0]["msg"]
    body = assert_error(lead.post("/projects/alpha/exports", {"eval_fraction": 0.9, "shape": "csv"}), 422)
    assert sorted(e["loc"] for e in body["errors"]) == [["body", "eval_fraction"], ["body", "shape"]]
    assert body["detail"].startswith("Invalid request: body.")
    assert_error(lead.post("/projects/alpha/exports", {"keep_ties": True}), 422)  # unknown field
    assert_error(lead.post("/projects/alpha/exports", b"{", content_type="application/json"), 400)
    assert database_state() == before


# Training


def test_a_run_is_created_from_a_snapshot_with_a_config(world, users, api_as, tiny_base, training_queue):
    admin = api_as(users["admin"])
    body = {
        "snapshot": str(world.snapshot.uuid),
        "base_model": "tiny",
        "config": {"max_steps": 2, "max_length": 128},
    }
    response = admin.post("/training/runs", body)
    assert response.status_code == 201, response.content
    run = response.json()
    assert (
        run["state"] == "queued" and run["project"] == "alpha" and run["snapshot"] == str(world.snapshot.uuid)
    )
    assert run["config"]["max_steps"] == 2 and run["config"]["max_length"] == 128
    assert TrainingRun.objects.get(pk=run["id"]).created_by == users["admin"]


@pytest.mark.parametrize(
    ("change", "status", "loc"),
    [
        ({"config": {"beta": -1}}, 400, ["body"]),
        ({"base_model": "gpt-9"}, 400, ["body", "base_model"]),
        ({"config": {"bogus": 1}}, 422, None),
        ({"snapshot": "00000000-0000-0000-0000-000000000000"}, 404, None),
    ],
)
def test_a_run_the_services_refuse_is_an_error_and_nothing_is_queued(
    world,
    users,
    api_as,
    tiny_base,
    training_queue,
    change,
    status,
    loc,
):
    before = database_state()
    body = {"snapshot": str(world.snapshot.uuid), "base_model": "tiny", **change}
    error = assert_error(api_as(users["admin"]).post("/training/runs", body), status)
    if loc is not None:
        assert error["errors"][0]["loc"] == loc
    assert database_state() == before


def test_a_snapshot_a_run_cannot_train_on_is_400(world, users, api_as, tiny_base):
    ExportSnapshot.objects.filter(pk=world.snapshot.pk).update(shape="unpaired")
    body = {"snapshot": str(world.snapshot.uuid), "base_model": "tiny"}
    error = assert_error(api_as(users["admin"]).post("/training/runs", body), 400)
    assert error["errors"][0]["loc"] == ["body", "snapshot"]


def test_runs_are_listed_read_with_metrics_canceled_resumed_and_downloaded(
    world, users, api_as, training_queue
):
    admin = api_as(users["admin"])
    for kind, step in (("eval", 0), ("train", 2), ("train", 1)):
        RunMetric.objects.create(run=world.run, kind=kind, step=step, values={"loss": 0.5 + step})
    listed = admin.get("/training/runs").json()
    assert listed["count"] == 2 and {r["id"] for r in listed["items"]} == {world.run.pk, world.done_run.pk}
    detail = admin.get(f"/training/runs/{world.run.pk}").json()
    assert [(m["kind"], m["step"]) for m in detail["metrics"]] == [("eval", 0), ("train", 1), ("train", 2)]
    assert detail["metrics"][1]["values"] == {"loss": 1.5}
    assert_error(admin.post(f"/training/runs/{world.run.pk}/resume"), 400)  # queued: nothing to resume
    canceled = admin.post(f"/training/runs/{world.run.pk}/cancel").json()
    assert canceled["state"] == "canceled" and canceled["cancel_requested_at"]
    resumed = admin.post(f"/training/runs/{world.run.pk}/resume").json()
    assert resumed["state"] == "queued" and resumed["cancel_requested_at"] is None
    download = admin.get(f"/training/runs/{world.done_run.pk}/download")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).namelist()
    assert sorted(names) == [
        f"prefstudio-run-{world.done_run.pk}/{n}" for n in ("adapter_model.safetensors", "run_card.json")
    ]
    assert_error(admin.get(f"/training/runs/{world.run.pk}/download"), 404)  # no artifact yet


def test_a_resume_the_queue_cannot_take_is_503_and_changes_nothing(world, users, api_as, monkeypatch):
    TrainingRun.objects.filter(pk=world.run.pk).update(state="failed")
    monkeypatch.setattr(jobs, "queue_available", lambda *args: False)
    before = database_state()
    assert_error(api_as(users["admin"]).post(f"/training/runs/{world.run.pk}/resume"), 503)
    assert database_state() == before


# Generation


def test_a_lead_creates_reads_cancels_and_resumes_a_generation_job(world, users, api_as, tiny_base):
    lead = api_as(users["lead"])
    body = {"project": "alpha", "models": ["base:tiny"], "samples": 3, "source": "prompts",
            "prompts": ["Hi", [{"role": "user", "content": "Yo"}]], "temperature": 0.7}  # fmt: skip
    response = lead.post("/generation/jobs", body)
    assert response.status_code == 201, response.content
    job = response.json()
    assert (job["state"], job["kind"], job["samples"], job["prompts"], job["project"]) == (
        "queued",
        "samples",
        3,
        2,
        "alpha",
    )
    assert GenerationJob.objects.get(pk=job["id"]).prompts == ["Hi", [{"role": "user", "content": "Yo"}]]
    assert lead.get(f"/generation/jobs/{job['id']}").json()["params"]["temperature"] == 0.7
    assert lead.get("/generation/jobs").json()["count"] == 2
    assert lead.post(f"/generation/jobs/{job['id']}/cancel").json()["state"] == "canceled"
    assert lead.post(f"/generation/jobs/{job['id']}/resume").json()["state"] == "queued"


@pytest.mark.parametrize(
    ("change", "status", "loc"),
    [
        ({"models": ["run:999"]}, 400, ["body", "models"]),
        ({"models": ["base:tiny", "base:tiny"], "kind": "versus"}, 400, ["body", "models"]),
        ({"source": "prompts", "prompts": None}, 400, ["body", "prompts"]),
        ({"prompts": ["  "]}, 422, None),
        ({"prompts": [[{"role": "robot", "content": "x"}]]}, 422, None),
        ({"project": "bravo"}, 404, None),
    ],
)
def test_a_job_the_rules_refuse_is_an_error_and_nothing_is_queued(
    world,
    other_project,
    users,
    api_as,
    tiny_base,
    change,
    status,
    loc,
):
    before = database_state()
    body = {"project": "alpha", "models": ["base:tiny"], "source": "prompts", "prompts": ["Hi"], **change}
    error = assert_error(api_as(users["lead"]).post("/generation/jobs", body), status)
    if loc is not None:
        assert error["errors"][0]["loc"] == loc
    assert database_state() == before


# Evaluation


def test_a_round_reads_with_its_win_rate(world, users, api_as):
    tuned, base = world.round.model_refs[1], world.round.model_refs[0]
    batch = ImportBatch.objects.create(project=world.project, source_name="eval", evaluation=True)
    for i in range(3):
        pair = Pair.objects.create(project=world.project, batch=batch, prompt=f"P{i}", response_a=f"t{i}",
                                   response_b=f"b{i}", model_a=tuned, model_b=base, shape="pair",
                                   content_hash=f"{i + 1}" * 64)  # fmt: skip
        Judgment.objects.create(pair=pair, annotator=users["annotator"], choice="a")
    GenerationJob.objects.filter(pk=world.job.pk).update(batch=batch)
    lead = api_as(users["lead"])
    assert [r["id"] for r in lead.get("/evaluation/rounds").json()["items"]] == [world.round.pk]
    results = lead.get(f"/evaluation/rounds/{world.round.pk}").json()["results"]
    assert (
        results["win_rate"]
        == round_results(EvaluationRound.objects.get(pk=world.round.pk))["win_rate"].to_dict()
    )
    assert results["win_rate"]["rate"] == 1.0 and results["win_rate"]["prompts"] == 3
    assert (results["pairs"], results["judgments"], results["criteria"]) == (3, 3, {})
    assert results["sentence"].startswith(f"run {world.done_run.pk} (tuned) preferred")


# The error shape


def test_throttled_calls_are_429_with_retry_after(world, users, api_as, settings):
    settings.PREFSTUDIO_API_RATE = "2/min"
    client = api_as(users["annotator"])
    assert [client.get("/projects").status_code for _ in range(2)] == [200, 200]
    response = client.get("/projects")
    assert_error(response, 429)
    assert int(response["Retry-After"]) >= 1


def test_every_operation_declares_its_errors_with_the_error_schema(client):
    for path, operations in client.get(f"{API}/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            codes = {int(code) for code in operation["responses"]}
            assert set(ALWAYS) <= codes, (method, path)
            for code in codes - {200, 201, 202}:
                content = operation["responses"][str(code)]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)


def test_the_real_docs_page_loads_its_assets_from_our_origin(client):
    """/api/v1/docs: Swagger UI from /static/, no CDN, no inline script (the page's CSP forbids both)."""
    response = client.get(f"{API}/docs")
    body = response.content.decode()
    assert response.status_code == 200 and "swagger" in body.lower()
    assert "cdn" not in body.lower() and "unpkg" not in body.lower()
    scripts = re.findall(r"<script([^>]*)>", body)
    assert scripts and all("src=" in attrs or "application/json" in attrs for attrs in scripts)
