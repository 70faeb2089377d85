"""`manage.py export_pairs SLUG --out DIR`: an export snapshot from the command line, like the Export page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from labeling.consensus import parse_share
from labeling.models import ExportSnapshot, Project
from labeling.snapshots import dropped_in_words, rules_for, snapshot_start
from prefstudio import storage


class Command(BaseCommand):
    help = (
        "Export a project's consistent pairs in TRL's preference format (or the hosted services' one, "
        "--shape openai-preference) as an immutable snapshot (listed on the Export page), and copy its "
        "files to --out."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--out", type=Path, required=True, help="a folder for copies of the files")
        parser.add_argument("--format", default="jsonl", choices=ExportSnapshot.Format.values)
        parser.add_argument("--shape", default="standard", choices=ExportSnapshot.Shape.values)
        parser.add_argument("--min-judgments", type=int, help="counted votes a pair needs (default: k)")
        parser.add_argument(
            "--min-share", default="2/3", help="winning share needed (majority): 2/3, 0.75 or 75%%"
        )
        parser.add_argument("--keep-ties", action="store_true")
        parser.add_argument("--keep-both-bad", action="store_true")
        parser.add_argument("--drop-gold", action="store_true")
        parser.add_argument("--no-adjudication", action="store_true", help="ignore leads' final labels")
        parser.add_argument("--method", default="majority", choices=["majority", "dawid-skene"])
        parser.add_argument("--min-posterior", type=float, default=0.8, help="with --method dawid-skene")
        parser.add_argument("--eval-fraction", type=float, default=0.05)
        parser.add_argument(
            "--no-metadata", action="store_true", help="leave each pair's imported metadata out of meta"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug '{options['project']}'.") from None
        try:
            min_share = parse_share(options["min_share"])
        except ValueError as exc:
            raise CommandError(f"Invalid rule: min_share: {exc}") from None
        values = {
            "min_share": min_share,
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
            include_metadata=not options["no_metadata"],
            min_share_text=options["min_share"],
            in_worker=False,
            progress=lambda done, total: self.stderr.write(f"  {done} / {total} pairs"),
        )
        if snapshot.state != ExportSnapshot.State.DONE:
            raise CommandError(snapshot.message or "The export failed.")
        out: Path = options["out"]
        out.mkdir(parents=True, exist_ok=True)
        dropped = "; ".join(f"{words}: {n}" for _, words, n in dropped_in_words(snapshot.dropped))
        self.stdout.write(f"Snapshot {snapshot.uuid}: {snapshot.kept} of {snapshot.pairs_done} pairs kept; "
                          f"dropped: {dropped or 'none'}.")  # fmt: skip
        for info in snapshot.files:
            target = out / info["name"]
            storage.download(storage.media(), f"{snapshot.directory}/{info['name']}", target)
            self.stdout.write(f"  {target}  {info['rows']} rows  sha256 {info['sha256']}")
        if snapshot.suggested_label_smoothing is not None:
            measured = (
                f"Measured disagreement {snapshot.disagreement:.3f} (kept A/B pairs with votes not unanimous)"
                if snapshot.disagreement is not None
                else "No disagreement to measure (a lead settled every kept A/B pair without votes)"
            )
            self.stdout.write(
                f"{measured}, label noise {snapshot.label_noise:.3f}: "
                f"suggested cDPO label_smoothing {snapshot.suggested_label_smoothing}."
            )
