"""The OpenAPI document against the running API: schemathesis generates requests for every operation from
/api/v1/openapi.json (valid ones and invalid ones, a bounded and fixed set) and sends them as an admin; no
answer may be a 5xx or a status its operation does not declare, and every answer must fit the schema its
operation declares for its status."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api.v1 import api
from tests.api.conftest import API, token

pytestmark = pytest.mark.django_db

OPERATIONS = [
    (method.upper(), path)
    for path, methods in api.get_openapi_schema()["paths"].items()
    for method in methods
]
# No 5xx; every status declared; every body as its status's schema says.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 8}


@pytest.fixture
def wsgi_app():
    """The project's WSGI application, kept from closing the database connection at the end of each
    request as a server's does (Django's test client does the same): the test's transaction lives on it."""
    signals = (request_started, request_finished)
    for signal in signals:
        signal.disconnect(close_old_connections)
    yield WSGIHandler()
    for signal in signals:
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema(world, wsgi_app, settings):
    """The schema as the app serves it; path parameters, and the objects a body names, are the world's own
    half of the time (the other half, what schemathesis makes up), so that operations get past their 404s."""
    settings.PREFSTUDIO_API_RATE = "1000000/min"
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", wsgi_app)
    known = {
        "slug": [world.project.slug],
        "project": [world.project.slug],
        "snapshot": [str(world.snapshot.uuid)],
        "uuid": [str(world.batch.uuid), str(world.snapshot.uuid)],
        "run_id": [world.run.pk, world.done_run.pk],
        "job_id": [world.job.pk],
        "round_id": [world.round.pk],
        "name": ["train.jsonl"],
    }

    def half_known(values: dict | None) -> st.SearchStrategy:
        if not isinstance(values, dict) or not values:
            return st.just(values)
        return st.fixed_dictionaries({k: st.sampled_from([*known.get(k, []), v]) for k, v in values.items()})

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        return half_known(path_parameters)

    @schema.hook
    def flatmap_body(context, body):  # a run's snapshot, a generation job's project
        return half_known(body)

    return schema


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=lambda v: str(v))
def test_every_operation_answers_within_its_schema(method, path, api_schema, admin_user):
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {token(admin_user)}"}
    for mode, examples in EXAMPLES.items():

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_within_the_schema(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        answers_within_the_schema()


def test_the_document_and_its_docs_page_are_served_without_a_token(client):
    document = client.get(f"{API}/openapi.json").json()
    assert (document["info"]["title"], document["info"]["version"]) == ("prefstudio", "1")
    assert document["components"]["securitySchemes"]["TokenAuth"] == {"type": "http", "scheme": "bearer"}
    assert {op["operationId"] for ops in document["paths"].values() for op in ops.values()} >= {
        "project_list", "import_create", "export_download", "run_create", "job_cancel", "round_get",
    }  # fmt: skip
    docs = client.get(f"{API}/docs")
    assert docs.status_code == 200 and b"openapi.json" in docs.content
