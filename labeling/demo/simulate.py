"""Simulated judgments for the demo project, so that a newcomer's first look at Review shows real
numbers: five made-up annotators (one with a visible left-position bias) judge most demo pairs, with
some honest disagreement on the close calls; a few pairs stay open for the real demo annotators.

Deterministic (a fixed seed) and idempotent: run twice, it adds nothing the second time.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from labeling import tally
from labeling.models import Assignment, Judgment, Membership, Pair, Project

# (username, how often they pick the better answer, how often they just pick the left one)
SIMULATED = [
    ("sim-ana", 0.95, 0.0),
    ("sim-ben", 0.9, 0.0),
    ("sim-cleo", 0.85, 0.0),
    ("sim-dev", 0.8, 0.0),
    ("sim-eve", 0.70, 0.75),
]
# The better answer of each regular demo pair as the demo's author sees it ("tie": a close call).
TRUTH = {
    "demo-002": "b", "demo-003": "a", "demo-005": "a", "demo-006": "b", "demo-007": "b", "demo-008": "a",
    "demo-009": "b", "demo-010": "a", "demo-011": "tie", "demo-012": "b", "demo-013": "a", "demo-014": "b",
    "demo-018": "a", "demo-019": "b", "demo-020": "b", "demo-021": "a", "demo-022": "a", "demo-023": "tie",
    "demo-024": "a", "demo-025": "a", "demo-026": "a", "demo-027": "b", "demo-028": "tie", "demo-029": "a",
    "demo-030": "b", "demo-031": "a", "demo-033": "tie", "demo-034": "b", "demo-035": "a", "demo-036": "b",
    "demo-037": "a", "demo-038": "b", "demo-039": "a", "demo-040": "b",
}  # fmt: skip
# Pairs left without simulated judgments, for annotator1..3 to judge: curated ones, and concise-answer ones.
OPEN_PAIRS = 10
SEED = 20261130


def _vote(rng: random.Random, truth: str, accuracy: float, left_bias: float, a_on_left: bool) -> str:
    if rng.random() < left_bias:
        return "a" if a_on_left else "b"
    if truth == "tie":  # a close call: people split, some say tie
        return rng.choices(["a", "b", "tie"], weights=[0.4, 0.35, 0.25])[0]
    if rng.random() < accuracy:
        return truth
    return rng.choices(["b" if truth == "a" else "a", "tie", "both_bad"], weights=[0.7, 0.2, 0.1])[0]


@transaction.atomic
def simulate_judgments(project: Project) -> str:
    """Add the simulated annotators and their judgments to `project` once; a line saying what was done."""
    User = get_user_model()
    users = []
    for username, accuracy, bias in SIMULATED:
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()  # made-up people: nobody signs in as them
            user.save()
            user.groups.set([Group.objects.get(name="annotator")])
        Membership.objects.get_or_create(
            project=project, user=user, defaults={"role": Membership.Role.ANNOTATOR}
        )
        users.append((user, accuracy, bias))
    if Judgment.objects.filter(pair__project=project, annotator__in=[u for u, _, _ in users]).exists():
        return "Simulated judgments: already there."
    rng = random.Random(SEED)
    pairs = list(Pair.objects.filter(project=project).order_by("id"))
    curated = [p for p in pairs if not p.gold and p.external_id in TRUTH]
    # Imported chosen/rejected rows: the better answer is the side the file chose (the direct one).
    labelled = [p for p in pairs if not p.gold and p.external_id not in TRUTH and p.original_label]
    # An original label is "a", "b" or "t" (a tie, as the importer keeps it).
    truth = {p.pk: TRUTH[p.external_id] for p in curated} | {
        p.pk: "tie" if p.original_label == "t" else p.original_label for p in labelled
    }
    judged = curated[: max(0, len(curated) - OPEN_PAIRS)] + labelled[: max(0, len(labelled) - OPEN_PAIRS)]
    now = timezone.now()
    assignments, judgments, taken = [], [], {}
    for index, pair in enumerate(judged):  # spread over the last week, for the agreement-over-time chart
        when = now - timedelta(days=6 - index * 7 // len(judged), hours=rng.random() * 8)
        for user, accuracy, bias in rng.sample(users, project.overlap):
            assignments.append(
                _judge(rng, project, pair, user, truth[pair.pk], accuracy, bias, when, judgments)
            )
            taken[pair.pk] = taken.get(pair.pk, 0) + 1
    for pair in (p for p in pairs if p.gold):  # every simulated annotator meets every gold pair
        when = now - timedelta(days=rng.randint(0, 6), hours=rng.random() * 8)
        for user, accuracy, bias in users:
            assignments.append(
                _judge(rng, project, pair, user, pair.gold, accuracy, bias, when, judgments, gold=True)
            )
    Assignment.objects.bulk_create(assignments)
    for judgment, assignment in zip(judgments, assignments, strict=True):
        judgment.assignment = assignment
    times = [(j.created_at, j.updated_at) for j in judgments]
    Judgment.objects.bulk_create(judgments)
    for judgment, (created, updated) in zip(judgments, times, strict=True):  # auto_now* overwrote them
        judgment.created_at, judgment.updated_at = created, updated
    Judgment.objects.bulk_update(judgments, ["created_at", "updated_at"])
    for pair_id, n in taken.items():
        Pair.objects.filter(pk=pair_id).update(taken=F("taken") + n)
    tally.recount(project.pk)
    return (
        f"Simulated judgments: {len(judgments)} from {len(users)} made-up annotators on {len(judged)} pairs "
        "and the gold pairs."
    )


def _judge(rng, project, pair, user, truth, accuracy, bias, when, judgments, *, gold=False):  # noqa: ANN001, ANN202
    a_on_left = rng.random() < 0.5
    choice = _vote(rng, truth, accuracy, bias, a_on_left)
    seconds = round(math.exp(rng.gauss(3.4, 0.5)), 1)  # a median of about 30 s
    strength = rng.choice(["clearly", "clearly", "slightly"]) if choice in ("a", "b") else ""
    criteria = {c["name"]: (choice if choice in ("a", "b", "tie") and rng.random() < 0.85 else "tie")
                for c in project.criteria}  # fmt: skip
    leased = when - timedelta(seconds=seconds)
    assignment = Assignment(
        project=project, pair=pair, annotator=user, state=Assignment.State.DONE, a_on_left=a_on_left,
        is_gold=gold, leased_at=leased, expires_at=leased + timedelta(minutes=project.lease_minutes),
        finished_at=when,
    )  # fmt: skip
    judgments.append(
        Judgment(
            pair=pair,
            annotator=user,
            choice=choice,
            strength=strength,
            criteria=criteria,
            a_on_left=a_on_left,
            is_gold=gold,
            seconds_spent=seconds,
            created_at=when,
            updated_at=when,
        )  # fmt: skip
    )
    return assignment
