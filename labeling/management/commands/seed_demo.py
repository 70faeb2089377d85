"""Create the demo users and the demo project. Safe to run again: it converges to the same state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling.batches import import_stream
from labeling.demo.simulate import simulate_judgments
from labeling.models import ExportSnapshot, ImportBatch, Membership, Project
from labeling.snapshots import rules_for, snapshot_start
from prefstudio.roles import Role

DEMO_PASSWORD = "prefstudio-demo"
DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
# Curated pairs of every kind, then short questions where a direct answer meets the demo model's own
# long-winded one (scripts/build_demo_pairs.py): the preference a first training run visibly learns.
DEMO_FILES = (DEMO_DIR / "demo_pairs.jsonl", DEMO_DIR / "concise_pairs.jsonl")
DEMO_CRITERIA = [
    {"name": "Correctness", "question": "Which answer is more accurate?"},
    {"name": "Tone", "question": "Which answer is kinder and clearer?"},
]
DEMO_USERS: list[tuple[str, Role]] = [
    ("admin", Role.ADMIN),
    ("lead", Role.LEAD),
    ("annotator1", Role.ANNOTATOR),
    ("annotator2", Role.ANNOTATOR),
    ("annotator3", Role.ANNOTATOR),
]
DEMO_EVAL_FRACTION = 0.2
DEMO_DESCRIPTION = (
    "Everyday questions, coding help and a few chats: which answer is better? Two hundred of them are short "
    "questions where a direct answer meets the demo model's own long-winded one, so a first training run "
    "has a clear preference to learn. Most pairs already carry simulated judgments from five made-up "
    "annotators (sim-ana, sim-ben, sim-cleo, sim-dev, sim-eve; sim-eve leans to the left-hand answer) so "
    "that Review shows real numbers and Training has a snapshot; the rest wait for you."
)
DEMO_RUBRIC = """\
Pick the response a careful expert would rather send to this user.

1. **Correct first.** A wrong fact or a bug outweighs style.
2. **Helpful.** Does it answer what was asked, completely, without padding?
3. **Kind and clear.** Respectful tone, plain words, good structure.

Choose *tie* only when you would be equally happy sending either one, and *both bad* when
you would send neither.
"""


class Command(BaseCommand):
    help = "Create demo users (admin, lead, annotator1..3) and a demo project. Idempotent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Seed even when DEBUG is off (the demo passwords are public: never on a real site).",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["allow_production"]:
            raise CommandError(
                "Refusing to create demo users with public passwords while DEBUG is off. "
                "Pass --allow-production if this really is a throwaway instance."
            )
        User = get_user_model()
        project, _ = Project.objects.update_or_create(
            slug="demo",
            defaults={
                "name": "Demo: everyday and coding help",
                "description": DEMO_DESCRIPTION,
                "rubric": DEMO_RUBRIC,
                "criteria": DEMO_CRITERIA,
                "use_strength": True,
                "gold_rate": 0.1,
                "archived": False,
            },
        )
        for username, role in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.email = f"{username}@example.com"
            user.is_staff = user.is_superuser = role is Role.ADMIN
            user.is_active = True
            user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.set([Group.objects.get(name=role.value)])
            if role is not Role.ADMIN:
                Membership.objects.update_or_create(
                    project=project, user=user, defaults={"role": role.value, "active": True}
                )
        self.stdout.write(self._load_pairs(project))
        self.stdout.write(simulate_judgments(project))
        self.stdout.write(self._snapshot(project, admin=User.objects.get(username="admin")))
        self.stdout.write(self.style.SUCCESS(f"Demo project '{project.slug}' is ready."))
        self.stdout.write("Demo logins (all share one password, for local use only):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<11} {role.value:<10} password: {DEMO_PASSWORD}")

    def _snapshot(self, project: Project, *, admin: Any) -> str:
        """A first export of the simulated consensus, so Training has a snapshot to tune the demo model on."""
        if project.exports.filter(state=ExportSnapshot.State.DONE).exists():
            return "Demo snapshot: already there."
        snapshot = snapshot_start(
            project=project, user=admin, rules=rules_for(project), shape=ExportSnapshot.Shape.CONVERSATIONAL,
            fmt=ExportSnapshot.Format.JSONL, eval_fraction=DEMO_EVAL_FRACTION, in_worker=False,
        )  # fmt: skip
        if snapshot.state != ExportSnapshot.State.DONE:
            raise CommandError(f"The demo snapshot failed: {snapshot.message}")
        return f"Demo snapshot: {snapshot.train_rows} training and {snapshot.eval_rows} eval pairs."

    def _load_pairs(self, project: Project) -> str:
        """Import the demo files through the same importer users get; re-runs add nothing."""
        lines = []
        for path in DEMO_FILES:
            with path.open("rb") as stream:
                batch = ImportBatch.objects.create(
                    project=project,
                    source_name=path.name,
                    size_bytes=path.stat().st_size,
                    format="jsonl",
                    state=ImportBatch.State.RUNNING,
                )
                summary = import_stream(batch=batch, stream=stream, fmt="jsonl")
            if not summary.committed:
                raise CommandError(f"The demo file {path.name} is invalid: {summary.errors[:3]}")
            if not summary.imported:
                batch.delete()  # nothing new: keep the project's import list free of empty re-runs
            lines.append(f"Demo pairs ({path.name}): {summary.text}")
        return "\n".join(lines)
