"""The role groups and their permissions, as migrations and every later migrate/flush leave them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

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
