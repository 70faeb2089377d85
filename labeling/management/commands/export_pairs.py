"""`manage.py export_pairs SLUG --out DIR`: an export snapshot from the command line, like the Export page."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labeling.models import ExportSnapshot, Project
from labeling.snapshots import rules_for, snapshot_start


class Command(BaseCommand):
    help = (
        "Export a project's consistent pairs in TRL's preference format as an immutable snapshot (listed on "
        "the Export page), and copy its files to --out."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--out", type=Path, required=True, help="a folder for copies of the files")
        parser.add_argument("--format", default="jsonl", choices=ExportSnapshot.Format.values)
        parser.add_argument("--shape", default="standard", choices=ExportSnapshot.Shape.values)
        parser.add_argument("--min-judgments", type=int, help="counted votes a pair needs (default: k)")
        parser.add_argument("--min-share", type=float, default=2 / 3, help="winning share needed (majority)")
        parser.add_argument("--keep-ties", action="store_true")
        parser.add_argument("--keep-both-bad", action="store_true")
        parser.add_argument("--drop-gold", action="store_true")
        parser.add_argument("--no-adjudication", action="store_true", help="ignore leads' final labels")
        parser.add_argument("--method", default="majority", choices=["majority", "dawid-skene"])
        parser.add_argument("--min-posterior", type=float, default=0.8, help="with --method dawid-skene")
        parser.add_argument("--eval-fraction", type=float, default=0.05)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug '{options['project']}'.") from None
        values = {
            "min_share": options["min_share"],
            "drop_ties": not options["keep_ties"],
            "drop_both_bad": not options["keep_both_bad"],
            "adjudication_overrides": not options["no_adjudication"],
            "drop_gold": options["drop_gold"],
            "method": options["method"],
            "min_posterior": options["min_posterior"],
        }
        if options["min_judgments"] is not None:
            values["min_judgments"] = options["min_judgments"]
        if not 0 <= options["eval_fraction"] < 1:
            raise CommandError(f"--eval-fraction must be from 0 to below 1, got {options['eval_fraction']}.")
        try:
            rules = rules_for(project, **values)
        except ValueError as exc:
            raise CommandError(f"Invalid rule: {exc}") from None
        snapshot = snapshot_start(
            project=project,
            user=None,
            rules=rules,
            shape=options["shape"],
            fmt=options["format"],
            eval_fraction=options["eval_fraction"],
            in_worker=False,
            progress=lambda done, total: self.stderr.write(f"  {done} / {total} pairs"),
        )
        if snapshot.state != ExportSnapshot.State.DONE:
            raise CommandError(snapshot.message or "The export failed.")
        out: Path = options["out"]
        out.mkdir(parents=True, exist_ok=True)
        root = Path(settings.MEDIA_ROOT) / snapshot.directory
        self.stdout.write(f"Snapshot {snapshot.uuid}: {snapshot.kept} of {snapshot.pairs_done} pairs kept; "
                          f"dropped {snapshot.dropped or 'none'}.")  # fmt: skip
        for info in snapshot.files:
            target = out / info["name"]
            shutil.copyfile(root / info["name"], target)
            self.stdout.write(f"  {target}  {info['rows']} rows  sha256 {info['sha256']}")
        if snapshot.suggested_label_smoothing is not None:
            self.stdout.write(
                f"Measured disagreement {snapshot.disagreement:.3f}, label noise {snapshot.label_noise:.3f}: "
                f"suggested cDPO label_smoothing {snapshot.suggested_label_smoothing}."
            )
