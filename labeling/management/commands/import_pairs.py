"""Import preference pairs from a JSONL (.jsonl.gz), JSON, CSV / TSV or Parquet file into a project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling.batches import ERRORS_SHOWN, import_options, import_stream, sniff_format
from labeling.importing import FORMATS, ImportFormatError
from labeling.layouts import LABEL_VALUES, TARGETS, parse_label_values, parse_mapping
from labeling.models import ImportBatch, Project
from labeling.records import plural


class Command(BaseCommand):
    help = (
        "Import pairs into a project. All or nothing by default: one invalid record imports nothing. "
        "Exits non-zero when records are invalid (unless --skip-invalid) or the file cannot be read."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", default="auto", choices=["auto", *FORMATS])
        parser.add_argument("--dry-run", action="store_true", help="validate and count, then roll back")
        parser.add_argument(
            "--skip-invalid", action="store_true", help="import the good records and report the rejected ones"
        )
        parser.add_argument(
            "--report", type=Path, help="where to write rejected records with reasons (with --skip-invalid)"
        )
        parser.add_argument(
            "--map",
            default="",
            metavar="TARGET=SOURCE[,TARGET=SOURCE...]",
            help=f"read fields of another layout: TARGET is one of {', '.join(TARGETS)}; SOURCE the file's "
            "field (a path into objects and lists: info.post, summaries.0.text), e.g. "
            "--map prompt=question,chosen=good,rejected=bad",
        )
        parser.add_argument(
            "--label-values",
            default="",
            metavar="VALUE=a|b|tie[,VALUE=...]",
            help="what each value of the field mapped to label means: a (response A is better), b or tie, "
            "e.g. --map label=better_response_id --label-values 0=a,1=b. Without it a label reads only "
            "a, b, tie, model_a, model_b and 'tie (bothbad)'.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug '{options['project']}'.") from None
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        try:
            mapping: dict = parse_mapping(options["map"])
        except ValueError as exc:
            raise CommandError(f"--map: {exc}") from None
        try:
            values = parse_label_values(options["label_values"])
        except ValueError as exc:
            raise CommandError(f"--label-values: {exc}") from None
        if values and "label" not in mapping:
            raise CommandError(
                "--label-values says what the label's values mean: name its field with --map label=FIELD"
            )
        if values:
            mapping[LABEL_VALUES] = values
        with path.open("rb") as stream:
            try:
                fmt = sniff_format(stream, path.name) if options["format"] == "auto" else options["format"]
                with transaction.atomic():
                    batch = ImportBatch.objects.create(
                        project=project,
                        source_name=path.name,
                        size_bytes=path.stat().st_size,
                        format=fmt,
                        skip_invalid=options["skip_invalid"],
                        mapping=mapping,
                        state=ImportBatch.State.RUNNING,
                    )
                    summary = import_stream(
                        batch=batch, stream=stream, fmt=fmt, options=import_options(form=False)
                    )
                    if options["dry_run"]:
                        transaction.set_rollback(True)
            except ImportFormatError as exc:
                raise CommandError(str(exc)) from None
        if options["dry_run"] and batch.report:
            batch.report.storage.delete(batch.report.name)  # files are not rolled back with the rows
        for line in summary.errors:
            self.stderr.write(line)
        if summary.error_count > len(summary.errors):
            self.stderr.write(f"... and {plural(summary.error_count - ERRORS_SHOWN, 'more problem')}.")
        if summary.error_count:
            self.stderr.write(
                f"{plural(summary.error_count, 'problem')} in {summary.rejected} of "
                f"{plural(summary.records, 'record')}."
            )
        if options["dry_run"]:
            self.stdout.write(f"Dry run, nothing saved ({fmt}): {summary.text}")
        else:
            self.stdout.write(f"{project.slug} ({fmt}): {summary.text}")
        if summary.rejected and summary.committed and batch.report and not options["dry_run"]:
            target = options["report"] or path.with_name(path.name + ".rejected.jsonl")
            with batch.report.open("rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            self.stdout.write(f"Rejected records with reasons: {target}")
        if summary.error_count and not summary.committed:
            raise CommandError("Nothing was imported.", returncode=1)
