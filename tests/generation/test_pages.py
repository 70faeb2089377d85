"""The generation pages: who may open what, a job queued from the form, its progress page, endpoints,
the playground (one request at a time, answers escaped), the next round from a run's page."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client

from generation import runner
from generation.models import Endpoint, GenerationAnswer, GenerationJob
from labeling.models import Membership
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_who_may_open_what(project, other_project, annotator, lead, admin_user, tiny_base, tuned_run):
    foreign = GenerationJob.objects.create(kind="samples", project=other_project, model_refs=["base:tiny"],
                                           params={}, prompts=["x"], source="t", samples=2)  # fmt: skip
    own = GenerationJob.objects.create(kind="samples", project=project, model_refs=["base:tiny"], params={},
                                       prompts=["x"], source="t", samples=2)  # fmt: skip
    ann, leader, admin = signed_in(annotator), signed_in(lead), signed_in(admin_user)
    for url in ("/generation/", "/generation/new/", f"/generation/jobs/{own.pk}/", "/generation/playground/"):
        assert ann.get(url).status_code == 403
    assert leader.get("/generation/").status_code == 200
    assert leader.get(f"/generation/jobs/{own.pk}/").status_code == 200
    assert leader.get(f"/generation/jobs/{foreign.pk}/").status_code == 404  # not their project
    assert leader.post(f"/generation/jobs/{foreign.pk}/cancel/").status_code == 404
    for url in (
        "/generation/endpoints/new/",
        "/generation/playground/",
        f"/generation/runs/{tuned_run.pk}/next-round/",
    ):
        assert leader.get(url).status_code in (403, 405)
    assert leader.post("/generation/endpoints/new/", {"name": "x"}).status_code == 403
    form = leader.get("/generation/new/").content.decode()
    assert "base:tiny" in form and f"run:{tuned_run.pk}" in form  # a run of their own project
    assert admin.get("/generation/endpoints/new/").status_code == 200


def test_a_job_from_the_form_is_queued_and_its_page_follows_it(project, lead, tiny_base):
    make_pairs(project, 3)
    client = signed_in(lead)
    response = client.post("/generation/new/", {
        "project": project.pk, "kind": "samples", "models": ["base:tiny"], "samples": 2, "source": "project",
        "limit": 2, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "seed": 1,
    })  # fmt: skip
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/generation/jobs/{job.pk}/"
    assert (job.prompts, job.samples, job.created_by, job.state) == (["Q0", "Q1"], 2, lead, "queued")
    page = client.get(f"/generation/jobs/{job.pk}/").content.decode()
    assert "Queued: waiting for a worker" in page and 'hx-trigger="every 2s"' in page
    runner.execute(job.pk)
    poll = client.get(f"/generation/jobs/{job.pk}/", HTTP_HX_REQUEST="true")
    assert poll.status_code == 286 and "Pairs imported" in poll.content.decode()


def test_the_form_says_what_is_wrong(project, lead, tiny_base):
    client = signed_in(lead)
    bad_file = io.BytesIO(b'{"prompt": "ok"}\n{"nope": 1}\n')
    bad_file.name = "prompts.jsonl"
    response = client.post("/generation/new/", {
        "project": project.pk, "kind": "versus", "models": ["base:tiny"], "source": "file",
        "prompt_file": bad_file, "limit": 5, "max_new_tokens": 8, "temperature": 0, "top_p": 1.0,
    })  # fmt: skip
    body = response.content.decode()
    assert response.status_code == 400 and not GenerationJob.objects.exists()
    assert (
        "A comparison needs two or more models." in body
        and "prompts.jsonl, line 2: no &#x27;prompt&#x27; field" in body
    )


def test_endpoints_keep_the_name_of_the_key_variable_never_a_key(admin_user):
    client = signed_in(admin_user)
    response = client.post("/generation/endpoints/new/", {
        "name": "vllm-a", "base_url": "http://gpu:8000/v1", "model": "run-3", "api_key_env": "sk-secret",
    })  # fmt: skip
    assert response.status_code == 400 and "environment variable name" in response.content.decode()
    client.post("/generation/endpoints/new/", {"name": "vllm-a", "base_url": "http://gpu:8000/v1",
                                               "model": "run-3", "api_key_env": "VLLM_KEY"})  # fmt: skip
    endpoint = Endpoint.objects.get()
    assert endpoint.api_key_env == "VLLM_KEY"
    assert "endpoint:vllm-a" in client.get("/generation/new/").content.decode()


def test_the_playground_answers_side_by_side_escaped_one_request_at_a_time(admin_user, tuned_run, tiny_base):
    client = signed_in(admin_user)
    page = client.get(f"/generation/playground/?run={tuned_run.pk}").content.decode()
    assert f'value="run:{tuned_run.pk}" selected' in page and 'value="base:tiny" selected' in page
    data = {"run": tuned_run.pk, "prompt": "Say **hi**", "left": "base:tiny", "right": f"run:{tuned_run.pk}",
            "max_new_tokens": 8, "temperature": 0, "seed": 0}  # fmt: skip
    response = client.post("/generation/playground/", data)
    job = GenerationJob.objects.get(kind="playground")
    assert response.status_code == 302 and job.prompts == ["Say **hi**"] and job.run == tuned_run
    again = client.post("/generation/playground/", data)
    assert again.status_code == 400 and "one at a time" in again.content.decode()
    runner.execute(job.pk)
    GenerationAnswer.objects.filter(job=job, model_ref="base:tiny").update(
        text="<script>alert(1)</script> *ok*"
    )
    body = client.get(f"/generation/playground/{job.pk}/").content.decode()
    assert "<script>alert(1)" not in body and "<em>ok</em>" in body and "<strong>hi</strong>" in body
    other = signed_in(make_other_admin())
    assert other.get(f"/generation/playground/{job.pk}/").status_code == 404


def make_other_admin():
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("root2", password="x" * 20)
    user.groups.set(Group.objects.filter(name="admin"))
    return user


def test_the_run_page_offers_the_playground_the_next_round_and_the_vllm_command(
    admin_user, tuned_run, project
):
    make_pairs(project, 2)
    Membership.objects.create(project=project, user=admin_user, role=Membership.Role.LEAD)
    client = signed_in(admin_user)
    page = client.get(f"/training/runs/{tuned_run.pk}/").content.decode()
    assert f"--lora-modules run-{tuned_run.pk}=" in page and "vllm serve" in page
    assert f"/generation/playground/?run={tuned_run.pk}" in page
    response = client.post(f"/generation/runs/{tuned_run.pk}/next-round/")
    job = GenerationJob.objects.get(kind="next-round")
    assert response.status_code == 302 and job.model_refs == [f"run:{tuned_run.pk}"] and job.samples == 2
    assert json.dumps(job.prompts) == json.dumps(["Q0", "Q1"])
