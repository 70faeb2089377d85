"""`manage.py generate_pairs PROJECT --model MODEL [--model MODEL2] ...`: answer prompts with models and
import the answers' pairs into the project, here and now (or on the workers with --enqueue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from generation import services
from generation.models import GenerationJob
from generation.runner import execute
from labeling.models import Project
from prefstudio.jobs import QueueUnavailable


class Command(BaseCommand):
    help = (
        "Generate pairs for PROJECT: N samples from one --model (--samples N, at least 2), or one answer "
        "each from two or more --model. MODEL is a base model's name or folder, base:NAME, run:ID or "
        "endpoint:NAME. Prompts are the project's own unless --prompts FILE (JSONL with a prompt field, or "
        "CSV with a prompt column). Prints the batch it created."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--model", action="append", required=True, dest="models")
        parser.add_argument("--samples", type=int, default=None, help="answers per prompt from one model")
        parser.add_argument("--prompts", type=Path, help="a JSONL or CSV file of prompts")
        parser.add_argument("--max-new-tokens", type=int, default=256)
        parser.add_argument("--temperature", type=float, default=None, help="default 1.0 for samples, else 0")
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--limit", type=int, default=services.MAX_PROMPTS, help="at most this many prompts"
        )
        parser.add_argument(
            "--enqueue", action="store_true", help="hand the job to the GPU workers and return"
        )

    def handle(self, *args: Any, **o: Any) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project {o['project']!r}.")
        # A folder on this host is a model too, here (pages and workers elsewhere offer only the allow-list).
        o["models"] = [f"path:{m}" if Path(m).is_dir() else m for m in o["models"]]
        several = len(o["models"]) > 1
        samples = o["samples"] if o["samples"] is not None else (1 if several else 2)
        if o["prompts"]:
            try:
                prompts = services.prompts_from_file(o["prompts"].read_bytes(), o["prompts"].name)
            except (OSError, services.PromptFileError) as exc:
                raise CommandError(str(exc)) from None
            source = f"file {o['prompts'].name}"
        else:
            prompts = services.prompts_from_project(project, limit=o["limit"])
            source = f"{project.name}: its prompts"
        prompts = prompts[: o["limit"]]
        temperature = o["temperature"] if o["temperature"] is not None else (0.0 if several else 1.0)
        try:
            job = services.job_create(
                kind=GenerationJob.Kind.VERSUS if several else GenerationJob.Kind.SAMPLES, user=None,
                model_refs=o["models"], prompts=prompts, source=source, samples=samples, project=project,
                params={"max_new_tokens": o["max_new_tokens"], "temperature": temperature,
                        "top_p": o["top_p"], "seed": o["seed"]},
                enqueue=o["enqueue"], allow_paths=not o["enqueue"],
            )  # fmt: skip
        except (ValueError, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"Queued generation job {job.pk} ({len(prompts)} prompts).")
            return
        self.stdout.write(
            f"Generation job {job.pk}: {len(prompts)} prompts, models {', '.join(job.model_refs)} ..."
        )
        try:
            outcome = execute(job.pk, worker="manage.py generate_pairs")
        except Exception as exc:
            job.refresh_from_db()
            raise CommandError(job.error or f"{type(exc).__name__}: {exc}") from None
        job.refresh_from_db()
        if job.batch is None:
            self.stdout.write(
                f"Job {job.pk}: {outcome}; no batch ({job.identical_skipped} identical pairs left out)."
            )
            return
        self.stdout.write(
            f"Job {job.pk}: {outcome}. Batch {job.batch.uuid} ({job.batch.source_name}): {job.pairs_made} "
            f"pairs imported, {job.identical_skipped} pairs of identical answers left out."
        )
