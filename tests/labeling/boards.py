"""A project with known judgments for the review and export tests: the same votes every time, so that
each pair lands in a known consensus case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from labeling.models import Assignment, ImportBatch, Judgment, Membership, Pair, Project

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q7"}]
# One entry per pair: (prompt, gold, {annotator index: choice}). With the default rules (k = 3, share
# 2/3) in the standard shape: 0, 1, 6 kept; 2 split; 3 tie; 4 both bad; 5, 8, 10 too few votes (8 is
# kept once adjudicated); 7 a chat prompt; 9 split 2-2, kept as B when annotator 3 is left out.
LAYOUT: list[tuple[Any, str, dict[int, str]]] = [
    ("Q0", "", {0: "a", 1: "a", 2: "a"}),
    ("Q1", "", {0: "a", 1: "a", 3: "b"}),
    ("Q2", "", {0: "a", 1: "b", 2: "tie"}),
    ("Q3", "", {0: "tie", 1: "tie", 2: "tie"}),
    ("Q4", "", {0: "both_bad", 1: "both_bad", 2: "both_bad"}),
    ("Q5", "", {0: "a"}),
    ("Q6", "a", {0: "a", 1: "a", 2: "b"}),
    (CHAT, "", {0: "b", 1: "b", 2: "b"}),
    ("Q8", "", {0: "a", 2: "b"}),
    ("Q9", "", {0: "b", 1: "b", 2: "a", 3: "a"}),
    ("Q10", "", {}),
]


@dataclass
class Board:
    """A project with known judgments: `pairs[i]` holds LAYOUT[i]'s votes by `raters[j]`."""

    project: Project
    pairs: list[Pair]
    raters: list[Any]
    lead: Any

    def membership(self, j: int) -> Membership:
        return Membership.objects.get(project=self.project, user=self.raters[j])

    def url(self, name: str, *args: Any) -> str:
        return reverse(f"labeling:{name}", args=[self.project.slug, *args])


def raters(make_user: Any, project: Project, n: int) -> list[Any]:
    """`n` annotators of `project`, named a0, a1, ..."""
    users = []
    for i in range(n):
        user = make_user(f"a{i}", "annotator")
        Membership.objects.create(project=project, user=user)
        users.append(user)
    return users


def vote(pair: Pair, user: Any, choice: str, **fields: Any) -> Judgment:
    """`user` judged `pair` through a finished assignment, as the workbench would have stored it."""
    now = timezone.now()
    a_on_left = fields.pop("a_on_left", True)
    assignment = Assignment.objects.create(
        project=pair.project, pair=pair, annotator=user, state="done", leased_at=now, expires_at=now,
        finished_at=now, a_on_left=a_on_left,
    )  # fmt: skip
    Pair.objects.filter(pk=pair.pk).update(taken=F("taken") + 1)
    return Judgment.objects.create(
        pair=pair, annotator=user, assignment=assignment, choice=choice, a_on_left=a_on_left, **fields
    )


def build_pairs(
    project: Project, layout: list[tuple[Any, str, dict[int, str]]], users: list[Any]
) -> list[Pair]:
    """The pairs of `layout` in `project`, judged by `users` (A is shown left every other time)."""
    batch = ImportBatch.objects.create(project=project, source_name="t.jsonl", state="done")
    pairs = []
    for i, (prompt, gold, votes) in enumerate(layout):
        pair = Pair.objects.create(
            project=project, batch=batch, prompt=prompt, response_a=f"Answer A{i}",
            response_b=f"A longer answer B{i}", shape="pair", content_hash=f"{project.pk}-{i}".zfill(64),
            gold=gold, external_id=f"p{i}",
        )  # fmt: skip
        for j, choice in votes.items():
            vote(pair, users[j], choice, a_on_left=(i + j) % 2 == 0, seconds_spent=10.0 + j)
        pairs.append(pair)
    return pairs


def make_board(project: Project, lead: Any, make_user: Any) -> Board:
    users = raters(make_user, project, 4)
    return Board(project, build_pairs(project, LAYOUT, users), users, lead)
