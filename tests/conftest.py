"""Fixtures shared by the whole suite: users for each role and a project with members."""

from __future__ import annotations

import uuid
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache, caches
from django.core.files.base import ContentFile

from labeling.models import ImportBatch, Membership, Pair, Project
from tests.s3 import s3, s3_endpoint  # noqa: F401 (fixtures for every test folder)
from tests.tiny_model import build_tiny_model

PASSWORD = "correct-horse-battery-staple"


def label_status(client, user, slug: str = "alpha") -> int:
    """The status of `user` opening the workbench of project `slug` (signed in on `client`)."""
    client.force_login(user)
    return client.get(f"/projects/{slug}/label/").status_code


def worker_for(*queue_names: str, **kwargs):
    """An RQ worker on `queue_names` that reads jobs with the serializer our queues write."""
    return django_rq.get_worker(*queue_names, serializer=settings.RQ_JOB_SERIALIZER, **kwargs)


@pytest.fixture(autouse=True)
def _private_files(settings, tmp_path):
    """Uploads, exports and training artifacts go to the test's own folder, never var/."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.PREFSTUDIO_CACHE_DIR = tmp_path / "cache"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Counts cached per user (pairs left), and roles, projects and sessions in the shared cache, must not
    leak from one test's database into the next (the job queues in the same Redis stay)."""
    cache.clear()
    caches["shared"].delete_pattern("*")


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, *roles: str, **fields):
        user = django_user_model.objects.create_user(username=username, password=PASSWORD, **fields)
        user.groups.set(Group.objects.filter(name__in=roles))
        return user

    return make


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(slug="alpha", name="Alpha", rubric="Prefer **correct** answers.")


@pytest.fixture
def other_project(db) -> Project:
    return Project.objects.create(slug="bravo", name="Bravo")


@pytest.fixture
def annotator(make_user, project):
    user = make_user("ann", "annotator")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


@pytest.fixture
def lead(make_user, project):
    user = make_user("leah", "lead")
    Membership.objects.create(project=project, user=user, role=Membership.Role.LEAD)
    return user


@pytest.fixture
def admin_user(make_user):
    return make_user("root", "admin", is_staff=True)


@pytest.fixture
def no_role_user(make_user):
    return make_user("nobody")


@pytest.fixture
def users(annotator, lead, admin_user, no_role_user) -> dict:
    return {"annotator": annotator, "lead": lead, "admin": admin_user, "none": no_role_user}


@pytest.fixture
def batch(project, settings, tmp_path) -> ImportBatch:
    """A finished import of one pair into `project`, with a rejected-records report."""
    settings.MEDIA_ROOT = tmp_path / "media"
    batch = ImportBatch.objects.create(
        project=project, source_name="pairs.jsonl", format="jsonl", state=ImportBatch.State.DONE, imported=1
    )
    batch.report.save("report.jsonl", ContentFile(b'{"line": 2}\n'))
    Pair.objects.create(
        project=project, batch=batch, prompt="Q?", response_a="yes", response_b="no", shape="pair",
        content_hash="0" * 64,
    )  # fmt: skip
    return batch


# The tiny model of tests/tiny_model.py (engine, training-run and browser tests), built once per session
# and loaded the way the engine loads it.
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def training_queue(settings):
    """A training queue of this test's own on the real Redis, removed afterwards."""
    name = f"test-gpu-{uuid.uuid4().hex[:8]}"
    settings.RQ_QUEUES = {
        **settings.RQ_QUEUES,
        name: dict(settings.RQ_QUEUES[settings.PREFSTUDIO_TRAINING_QUEUE]),
    }
    settings.PREFSTUDIO_TRAINING_QUEUE = name
    yield name
    queue = django_rq.get_queue(name)
    queue.empty()
    queue.connection.delete(*queue.connection.keys(f"rq:*{name}*") or ["-"])


@pytest.fixture(scope="session")
def lively_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights drawn again (std 0.3) and a louder end of turn: the untrained tiny
    model answers every prompt with blank lines, which decode to empty text and prove nothing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("lively-model")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, 0.3)
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<|im_end|>")] *= 2
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
