"""RQ through django-rq on the real Redis: JSON jobs, long training timeout, a worker runs them."""

from __future__ import annotations

import json
import uuid
import zlib

import django_rq
import pytest
from django.conf import settings
from rq.serializers import JSONSerializer

from tests.conftest import worker_for
from training.queues import training_queue_snapshot


@pytest.fixture
def queue_name(settings):
    name = f"test-{uuid.uuid4().hex[:8]}"
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, name: dict(settings.RQ_QUEUES["default"])}
    yield name
    queue = django_rq.get_queue(name)
    queue.empty()
    queue.connection.delete(*queue.connection.keys(f"rq:*{name}*") or ["-"])


def test_training_queue_has_a_long_timeout_and_json():
    queue = django_rq.get_queue(settings.PREFSTUDIO_TRAINING_QUEUE)
    assert queue._default_timeout >= 6 * 3600
    assert queue.serializer is JSONSerializer or isinstance(queue.serializer, type(JSONSerializer))
    assert django_rq.get_queue("default").serializer is queue.serializer


def test_a_worker_runs_a_queued_job(queue_name):
    queue = django_rq.get_queue(queue_name)
    job = queue.enqueue("math.gcd", 84, 36)
    worker = worker_for(queue_name)
    worker.work(burst=True)
    job.refresh()
    assert job.is_finished and job.return_value() == 12


def test_jobs_are_stored_as_json(queue_name):
    queue = django_rq.get_queue(queue_name)
    job = queue.enqueue("math.gcd", 84, 36)
    data = json.loads(zlib.decompress(queue.connection.hget(job.key, "data")))
    assert data[0] == "math.gcd" and data[2] == [84, 36]


@pytest.mark.django_db
def test_training_page_lists_workers_on_the_training_queue(client, admin_user):
    from rq import Worker

    queue = django_rq.get_queue(settings.PREFSTUDIO_TRAINING_QUEUE)
    worker = Worker([queue], connection=queue.connection, name=f"gpu-host-{uuid.uuid4().hex[:6]}")
    worker.register_birth()
    try:
        snapshot = training_queue_snapshot()
        assert worker.name in [w.name for w in snapshot.workers]
        client.force_login(admin_user)
        assert worker.name in client.get("/training/").content.decode()
    finally:
        worker.register_death()


@pytest.mark.django_db
def test_training_page_says_when_redis_is_down(client, admin_user, settings):
    settings.RQ_QUEUES = {k: {**v, "URL": "redis://127.0.0.1:1/0"} for k, v in settings.RQ_QUEUES.items()}
    client.force_login(admin_user)
    response = client.get("/training/")
    assert response.status_code == 200
    assert "Redis is not reachable" in response.content.decode()


def test_the_rqworker_command_defaults_to_json():
    from django.core.management import load_command_class

    command = load_command_class("training", "rqworker")
    parser = command.create_parser("manage.py", "rqworker")
    assert parser.parse_args(["gpu"]).serializer == "rq.serializers.JSONSerializer"
    from django.core.management import get_commands

    assert get_commands()["rqworker"] == "training"


@pytest.mark.django_db
def test_a_worker_without_a_heartbeat_is_shown_lost_never_busy(client, admin_user, training_queue, settings):
    """A killed worker's entry stays in Redis saying "busy" until it expires; past TRAINING_LOST_SECONDS
    without a heartbeat the Training page calls it lost."""
    from datetime import UTC, datetime, timedelta

    from rq import Worker
    from rq.utils import utcformat

    queue = django_rq.get_queue(training_queue)
    alive = Worker([queue], connection=queue.connection, name=f"alive-{uuid.uuid4().hex[:6]}")
    killed = Worker([queue], connection=queue.connection, name=f"killed-{uuid.uuid4().hex[:6]}")
    for worker in (alive, killed):
        worker.register_birth()
        worker.set_state("busy")
    silent = datetime.now(UTC) - timedelta(seconds=settings.TRAINING_LOST_SECONDS + 30)
    queue.connection.hset(killed.key, "last_heartbeat", utcformat(silent))
    try:
        states = {w.name: w.state for w in training_queue_snapshot().workers}
        assert states == {alive.name: "busy", killed.name: "lost"}
        client.force_login(admin_user)
        page = client.get("/training/").content.decode()
        row = page[page.index(killed.name) :].split("</tr>")[0]
        assert "lost" in row and "busy" not in row and "no heartbeat for 1 min" in row
    finally:
        for worker in (alive, killed):
            worker.register_death()


def test_our_rqworker_heartbeats_within_the_lost_worker_limit(settings):
    """Idle, RQ heartbeats every worker_ttl - 15 s (405 s by default); busy, every job monitoring interval."""
    from django.core.management import load_command_class
    from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL

    parser = load_command_class("training", "rqworker").create_parser("manage.py", "rqworker")
    ttl = parser.parse_args(["gpu"]).worker_ttl
    assert (
        ttl - 15 < settings.TRAINING_LOST_SECONDS
        and DEFAULT_JOB_MONITORING_INTERVAL < settings.TRAINING_LOST_SECONDS
    )
