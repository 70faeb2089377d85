"""Fixtures of the JSON API tests: tokens, a client that sends them, and a project with one of everything
the API reaches (an import, a done export with its file, training runs, a generation job, an evaluation
round), with a lead, an annotator, an admin, and the leads of another project."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from api.tokens import create_token, revoke
from evaluation.models import EvaluationRound
from generation.models import GenerationJob
from labeling.models import ExportSnapshot, ImportBatch, Membership, Project
from tests.training.conftest import make_snapshot, tiny_base  # noqa: F401 - tiny_base: a fixture
from training.models import TrainingRun
from training.services import artifact_dir

API = "/api/v1"


class Api:
    """A test client that calls the API with a token (None: without one)."""

    def __init__(self, token: str | None = None) -> None:
        self.client = Client()
        self.token = token

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None and "content_type" not in kwargs:
            body, kwargs["content_type"] = json.dumps(body), "application/json"
        send = getattr(self.client, method.lower())
        return (
            send(API + path, body, headers=headers, **kwargs)
            if body is not None
            else send(API + path, headers=headers, **kwargs)
        )

    def get(self, path: str, **kwargs: Any):
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any):
        return self.call("POST", path, body, **kwargs)


def token(user, **kwargs: Any) -> str:
    return create_token(user, name="tests", **kwargs)[0]


@pytest.fixture
def api_as():
    """api_as(user) -> an Api with a fresh token of the user's."""
    return lambda user: Api(token(user))


@pytest.fixture
def dead_tokens(admin_user) -> dict[str, str]:
    """An admin's tokens that no longer work: revoked, expired; and one that never did."""
    revoked, row = create_token(admin_user, name="revoked")
    revoke(row)
    expired, row = create_token(admin_user, name="expired", expires_days=1)
    row.expires_at = timezone.now() - timedelta(seconds=1)
    row.save(update_fields=["expires_at"])
    return {"revoked": revoked, "expired": expired, "forged": "ps_abcdefgh_" + "x" * 43}


@pytest.fixture
def outsiders(make_user, other_project) -> dict[str, Any]:
    """The other project's lead, and a lead of it who may also train (as admins may): both see nothing of
    `project`."""
    lead = make_user("bo", "lead")
    trainer = make_user("trainer", "lead")
    trainer.user_permissions.add(Permission.objects.get(codename="manage_training"))
    for user in (lead, trainer):
        Membership.objects.create(project=other_project, user=user, role=Membership.Role.LEAD)
    return {"lead": lead, "trainer": trainer}


@dataclass
class World:
    project: Project
    batch: ImportBatch
    snapshot: ExportSnapshot
    run: TrainingRun  # queued
    done_run: TrainingRun  # succeeded, with an artifact
    job: GenerationJob  # queued
    round: EvaluationRound


@pytest.fixture
def world(project, batch, users, settings, tmp_path) -> World:
    """One of everything in `project`, made by its admin."""
    admin = users["admin"]
    snapshot = make_snapshot(project)
    snapshot.files = [_file_info(snapshot, f) for f in snapshot.files]
    snapshot.save(update_fields=["files"])
    run = TrainingRun.objects.create(snapshot=snapshot, base_model="tiny", config={}, created_by=admin)
    done_run = TrainingRun.objects.create(
        snapshot=snapshot, base_model="tiny", config={}, created_by=admin, state=TrainingRun.State.SUCCEEDED
    )
    folder = artifact_dir(done_run)
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (folder / "run_card.json").write_text("{}")
    job = GenerationJob.objects.create(
        kind=GenerationJob.Kind.SAMPLES, project=project, created_by=admin, model_refs=["base:tiny"],
        params={}, samples=2, prompts=["Q?"], source="tests", total=1,
    )  # fmt: skip
    round_ = EvaluationRound.objects.create(
        project=project, source_project=project, run=done_run, model_refs=["base:tiny", f"run:{done_run.pk}"],
        generation_job=job, prompts_note="1 prompt", created_by=admin,
    )  # fmt: skip
    return World(project, batch, snapshot, run, done_run, job, round_)


def _file_info(snapshot: ExportSnapshot, info: dict) -> dict:
    """A file entry as an export writes it (labeling.exporting.FileInfo)."""
    from django.conf import settings

    data = (Path(settings.MEDIA_ROOT) / snapshot.directory / info["name"]).read_bytes()
    return {**info, "pairs": info["rows"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def database_state() -> dict[str, list]:
    """What any refused call must leave as it was."""
    return {
        "batches": list(ImportBatch.objects.order_by("pk").values_list("pk", "state", "imported")),
        "pairs": list(Project.objects.order_by("pk").values_list("pk", "pairs__id")),
        "exports": list(ExportSnapshot.objects.order_by("pk").values_list("pk", "state")),
        "runs": list(TrainingRun.objects.order_by("pk").values_list("pk", "state", "cancel_requested_at")),
        "jobs": list(GenerationJob.objects.order_by("pk").values_list("pk", "state", "cancel_requested_at")),
        "rounds": list(EvaluationRound.objects.order_by("pk").values_list("pk")),
    }
