"""Every URL in the URLconf is guarded on the server: anonymous -> login, missing role -> 403.

The table is built by walking the URLconf, so a new view is covered as soon as it is routed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from api.tokens import create_token
from evaluation.models import EvaluationRound, Judge
from generation.models import Endpoint, GenerationJob
from labeling.invitations import invitation_create, invitation_token
from labeling.models import Assignment, ExportSnapshot, Invitation, Judgment, Membership, Project
from tests.conftest import label_status
from training.models import TrainingRun
from training.services import artifact_dir

# Third-party URL trees with their own guards, tested separately below.
# The JSON API guards its operations with tokens (api.auth.TokenAuth), tested in tests/api/.
EXTERNAL_NAMESPACES = {"admin", "django_rq", "api-v1"}


def walk(patterns, prefix="", namespace=None):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = p.namespace or namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), namespace, p


def our_routes():
    for route, namespace, pattern in walk(get_resolver().url_patterns):
        if namespace in EXTERNAL_NAMESPACES:
            continue
        yield route, pattern


def concrete(route: str, project, batch, user=None) -> str:
    """A real path for a route; per-user objects (assignments, judgments) belong to `user`."""
    path = "/" + route.replace("<slug:slug>", project.slug).replace("<uuid:batch>", str(batch.uuid))
    if "<int:" in path:
        pair = batch.pairs.get()
        now = timezone.now()
        assignment, _ = Assignment.objects.get_or_create(
            pair=pair, annotator=user, defaults={"project": project, "leased_at": now, "expires_at": now}
        )
        judgment, _ = Judgment.objects.get_or_create(pair=pair, annotator=user, defaults={"choice": "a"})
        path = path.replace("<int:assignment_id>", str(assignment.pk))
        path = path.replace("<int:judgment_id>", str(judgment.pk))
        path = path.replace("<int:pair_id>", str(pair.pk))
        path = path.replace("<int:run_id>", str(sample_run(project, user).pk))
        member = Membership.objects.filter(project=project).first() or Membership.objects.create(
            project=project, user=user
        )
        path = path.replace("<int:member_id>", str(member.pk))
        path = path.replace("<int:invitation_id>", str(sample_invitation(project, user).pk))
        if "<int:job_id>" in path:
            playground = path.startswith("/generation/playground/")
            path = path.replace(
                "<int:job_id>", str(sample_generation_job(project, user, playground=playground).pk)
            )
        if "<int:token_id>" in path:
            path = path.replace("<int:token_id>", str(create_token(user, name="sample")[1].pk))
        if "<int:round_id>" in path:
            round_, _ = EvaluationRound.objects.get_or_create(
                project=project, defaults={"model_refs": ["base:a", "base:b"], "prompts_note": "t"}
            )
            path = path.replace("<int:round_id>", str(round_.pk))
        if "<int:judge_id>" in path:
            judge, _ = Judge.objects.get_or_create(
                project=project, defaults={"name": "sample", "model_ref": "base:a", "template": "t"}
            )
            path = path.replace("<int:judge_id>", str(judge.pk))
        if "<int:endpoint_id>" in path:
            endpoint, _ = Endpoint.objects.get_or_create(
                name="sample", base_url="http://x:8000/v1", model="m"
            )
            path = path.replace("<int:endpoint_id>", str(endpoint.pk))
    if "<str:token>" in path:
        path = path.replace("<str:token>", invitation_token(sample_invitation(project, user)))
    if "<uuid:export>" in path:
        snapshot = sample_snapshot(project, user)
        path = path.replace("<uuid:export>", str(snapshot.uuid)).replace("<str:name>", "train.jsonl")
    assert "<" not in path, f"add a sample value for {route} to tests/test_access.py"
    return path


def sample_snapshot(project, user) -> ExportSnapshot:
    """A finished export with one file on disk."""
    snapshot, created = ExportSnapshot.objects.get_or_create(
        project=project,
        defaults={"rules": {}, "shape": "standard", "format": "jsonl", "eval_fraction": 0.0,
                  "created_by": user, "state": "done",
                  "files": [{"name": "train.jsonl", "split": "train", "rows": 0}]},
    )  # fmt: skip
    if created:
        folder = Path(settings.MEDIA_ROOT) / snapshot.directory
        folder.mkdir(parents=True)
        (folder / "train.jsonl").write_bytes(b"")
    return snapshot


def sample_invitation(project, user) -> Invitation:
    invitation = Invitation.objects.filter(project=project).first()
    return invitation or invitation_create(
        project=project, role="annotator", max_uses=1, days=7, created_by=user
    )


def sample_generation_job(project, user, *, playground: bool) -> GenerationJob:
    """A generation job in the project (the playground's: of this user)."""
    if playground:
        kind, fields = GenerationJob.Kind.PLAYGROUND, {"created_by": user, "project": None}
    else:
        kind, fields = GenerationJob.Kind.SAMPLES, {"project": project}
    job = GenerationJob.objects.filter(kind=kind, **fields).first()
    return job or GenerationJob.objects.create(
        kind=kind, model_refs=["base:tiny"], params={}, prompts=["x"], source="t", **fields
    )


def sample_run(project, user) -> TrainingRun:
    """A finished training run with an artifact on disk."""
    run, created = TrainingRun.objects.get_or_create(
        snapshot=sample_snapshot(project, user),
        defaults={
            "base_model": "tiny",
            "config": {},
            "state": "succeeded",
            "data_report": {"train": {"dropped": {"prompt_too_long": ["p1"]}, "changed": {}}},
        },  # fmt: skip
    )
    if created:
        folder = artifact_dir(run)
        folder.mkdir(parents=True)
        (folder / "run_card.json").write_text("{}")
    return run


def test_every_view_declares_its_access():
    for route, pattern in our_routes():
        assert getattr(pattern.callback, "access", None), (
            f"/{route} has no access mark: guard it with prefstudio.roles.requires() or mark it public()"
        )


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login(project, batch, no_role_user, client):
    for route, pattern in our_routes():
        if pattern.callback.access == "public":
            continue
        path = concrete(route, project, batch, no_role_user)
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"/login/?next={quote(path)}", path


@pytest.mark.django_db
def test_each_role_gets_exactly_the_pages_its_permission_allows(project, batch, users):
    for role, user in users.items():
        client = Client()
        client.force_login(user)
        for route, pattern in our_routes():
            access = pattern.callback.access
            if access == "public" or pattern.name == "logout":
                continue
            path = concrete(route, project, batch, user)
            allowed = access == "authenticated" or user.has_perm(access)
            response = client.get(path)
            # 405: a POST-only view, reached only after the role check passed; 302: a skipped pair's page
            # sends back to the recent list when the pair is no longer open to judge (here: never skipped).
            expected = (200, 405, *((302,) if pattern.name == "skipped-judge" else ())) if allowed else (403,)
            assert response.status_code in expected, f"{role} GET {path}: {response.status_code}"


@pytest.mark.django_db
def test_project_pages_of_other_projects_are_404(project, other_project, annotator, lead, client):
    Membership.objects.create(project=other_project, user=lead, role=Membership.Role.ANNOTATOR, active=False)
    for user in (annotator, lead):
        client.force_login(user)
        assert client.get(f"/projects/{other_project.slug}/").status_code == 404
        assert client.get(f"/projects/{project.slug}/").status_code == 200


@pytest.mark.django_db
def test_annotators_see_no_member_list_but_leads_do(project, annotator, lead, client):
    client.force_login(annotator)
    assert "Members" not in client.get(f"/projects/{project.slug}/").content.decode()
    client.force_login(lead)
    body = client.get(f"/projects/{project.slug}/").content.decode()
    assert "Members" in body and "ann" in body


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/", "/admin/rq/", "/admin/labeling/project/"])
def test_admin_and_queue_dashboard_are_for_admins_only(path, users):
    for role, user in users.items():
        client = Client()
        client.force_login(user)
        response = client.get(path)
        if role == "admin":
            assert response.status_code == 200, (role, path)
        else:
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (
                role,
                path,
            )


@pytest.mark.django_db
def test_navigation_follows_roles(users):
    expected = {
        "annotator": ["Label"],
        "lead": ["Label", "Review", "Export", "Generation", "Evaluations"],
        "admin": ["Label", "Review", "Export", "Training", "Generation", "Evaluations", "Admin"],
        "none": [],
    }
    for role, user in users.items():
        client = Client()
        client.force_login(user)
        items = [item["label"] for item in client.get("/").context["nav_items"]]
        assert items == expected[role], role


@pytest.mark.django_db
def test_every_unsafe_request_needs_a_csrf_token(project, batch, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    routes = [concrete(route, project, batch, admin_user) for route, _ in our_routes()] + [
        "/admin/rq/",
        "/admin/",
    ]
    for path in routes:
        for method in (client.post, client.put, client.patch, client.delete):
            response = method(path)
            assert response.status_code == 403, f"{method.__name__.upper()} {path}: {response.status_code}"
            assert b"CSRF" in response.content


@pytest.mark.django_db
def test_project_lists_count_pairs_and_annotators(project, batch, annotator, lead, make_user):
    extra = make_user("ann2", "annotator")
    Membership.objects.create(project=project, user=extra, active=False)
    client = Client()
    client.force_login(lead)
    (row,) = client.get("/review/").context["projects"]
    assert (row.pair_count, row.annotator_count) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [
        lambda project, member: member.delete(),
        lambda project, member: Membership.objects.filter(pk=member.pk).delete(),
        lambda project, member: setattr(member, "active", False) or member.save(),
        lambda project, member: setattr(member, "role", "lead") or member.save(),
        lambda project, member: setattr(project, "archived", True) or project.save(),
        lambda project, member: project.delete(),
    ],
    ids=["removed", "removed elsewhere", "deactivated", "now a lead", "archived", "deleted"],
)
def test_access_to_a_project_is_read_again_when_it_or_the_membership_changes(
    project, annotator, client, change
):
    """Who may open which project comes from the shared cache on every request, and a change to either
    side applies at the next request."""
    assert label_status(client, annotator) == 200
    member = Membership.objects.get(project=project, user=annotator)
    change(project, member)
    expected = 200 if member.role == "lead" and member.active and not project.archived else 404
    assert label_status(client, annotator) == expected


def test_a_renamed_project_is_found_by_its_new_slug_only(project, annotator, client):
    assert label_status(client, annotator) == 200
    project.slug = "renamed"
    project.save()
    assert label_status(client, annotator, "alpha") == 404
    assert label_status(client, annotator, "renamed") == 200


def test_a_slug_taken_by_a_new_project_does_not_carry_the_old_memberships(project, annotator, client):
    assert label_status(client, annotator) == 200
    project.delete()
    Project.objects.create(slug="alpha", name="Another alpha")
    assert label_status(client, annotator) == 404


def test_access_is_read_from_the_database_once(project, annotator, client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert label_status(client, annotator) == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/projects/alpha/label/").status_code == 200
    assert not [q for q in queries if '"labeling_project"' in q["sql"] or '"labeling_membership"' in q["sql"]]


def test_a_change_is_saved_when_the_shared_cache_does_not_answer(project, settings, caplog):
    shared = {**settings.CACHES["shared"], "LOCATION": "redis://127.0.0.1:1/0"}  # nothing listens there
    settings.CACHES = {**settings.CACHES, "shared": shared}
    for once_a_minute in logging.getLogger("prefstudio.shared_cache").filters:
        once_a_minute.last = 0.0  # another test's Redis error may have been logged in the last minute
    project.name = "Renamed"
    project.save()
    assert Project.objects.get(pk=project.pk).name == "Renamed"
    assert "shared cache: Redis does not answer" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("move", ["user", "project"])
def test_a_membership_moved_in_the_admin_takes_its_access_along_at_once(
    project, other_project, annotator, make_user, move
):
    """The admin's change view saves the membership with its new project or user: the cached access of
    both the old and the new side is dropped, not left to expire."""
    newcomer = make_user("ann2", "annotator")
    client = Client()
    assert label_status(client, annotator, "alpha") == 200  # cached: allowed
    assert label_status(client, newcomer, "alpha") == 404  # cached: not a member
    assert label_status(client, annotator, "bravo") == 404
    member = Membership.objects.get(project=project, user=annotator)
    to_user, to_project = (newcomer, project) if move == "user" else (annotator, other_project)
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    response = client.post(
        f"/admin/labeling/membership/{member.pk}/change/",
        {"user": to_user.pk, "project": to_project.pk, "role": "annotator", "active": "on"},
    )
    assert response.status_code == 302, response.content.decode()
    member.refresh_from_db()
    assert (member.user, member.project) == (to_user, to_project)
    assert label_status(client, annotator, "alpha") == 404
    assert label_status(client, newcomer, "alpha") == (200 if move == "user" else 404)
    assert label_status(client, annotator, "bravo") == (200 if move == "project" else 404)
