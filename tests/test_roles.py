"""The role groups and their permissions, as migrations and every later migrate/flush leave them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from tests.conftest import label_status

EXPECTED = {
    "annotator": {"label_pairs"},
    "lead": {"label_pairs", "review_project", "export_data"},
    "admin": {"label_pairs", "review_project", "export_data", "manage_training", "add_project",
              "change_project", "add_importbatch", "delete_importbatch", "change_membership", "add_user"},
}  # fmt: skip


def codenames(name: str) -> set[str]:
    return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))


@pytest.mark.django_db
def test_groups_carry_their_permissions():
    assert codenames("annotator") == EXPECTED["annotator"]
    assert codenames("lead") == EXPECTED["lead"]
    assert EXPECTED["admin"] <= codenames("admin")


@pytest.mark.django_db(transaction=True)
def test_groups_survive_a_flush():
    call_command("flush", "--noinput", verbosity=0)
    assert codenames("lead") == EXPECTED["lead"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "revoke",
    [
        lambda user, group: user.groups.remove(group),
        lambda user, group: user.groups.clear(),
        lambda user, group: group.user_set.remove(user),
        lambda user, group: group.user_set.clear(),
        lambda user, group: group.delete(),
    ],
    ids=[
        "user.groups.remove",
        "user.groups.clear",
        "group.user_set.remove",
        "group.user_set.clear",
        "group.delete",
    ],
)
def test_a_revoked_role_applies_at_the_next_request(client, annotator, revoke):
    """Roles are cached between requests (one query less on every request), and forgotten when the
    user's groups change from either side."""
    assert label_status(client, annotator) == 200
    revoke(annotator, Group.objects.get(name="annotator"))
    assert label_status(client, annotator) == 403


@pytest.mark.django_db
def test_a_given_role_applies_at_the_next_request_and_roles_are_read_once(client, project, make_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from labeling.models import Membership

    user = make_user("newcomer")
    Membership.objects.create(project=project, user=user)
    assert label_status(client, user) == 403
    Group.objects.get(name="annotator").user_set.add(user)
    assert label_status(client, user) == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/projects/alpha/label/").status_code == 200
    assert not [q for q in queries if 'SELECT "auth_group"."name"' in q["sql"]]  # from the cache
