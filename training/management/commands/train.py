"""`manage.py train RUN_ID`: run one training run in the foreground, on this host, without RQ."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from prefstudio import storage
from training.models import TrainingRun
from training.runner import execute


class Command(BaseCommand):
    help = (
        "Train one run here and now (its row gets the progress, metrics and outcome, as from a worker). "
        "The run must be queued; --resume first requeues a failed or canceled one, which then continues "
        "from its last checkpoint."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("run_id", type=int)
        parser.add_argument("--resume", action="store_true", help="continue a failed or canceled run")

    def handle(self, *args: Any, run_id: int, resume: bool, **options: Any) -> None:
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
            if run is None:
                raise CommandError(f"No training run {run_id}.")
            if resume:
                if not run.resumable:
                    raise CommandError(f"Run {run_id} is {run.state}; only failed or canceled runs resume.")
                run.state, run.cancel_requested_at, run.finished_at, run.error = "queued", None, None, ""
                run.save(update_fields=["state", "cancel_requested_at", "finished_at", "error"])
            elif run.state != TrainingRun.State.QUEUED:
                hint = " (use --resume)" if run.resumable else ""
                raise CommandError(f"Run {run_id} is {run.state}, not queued{hint}.")
        self.stdout.write(f"Training run {run_id} on {run.base_model} ...")
        try:
            outcome = execute(run_id, worker="manage.py train")
        except Exception as exc:
            raise CommandError(f"Run {run_id} failed: {type(exc).__name__}: {exc}") from None
        run.refresh_from_db()
        self.stdout.write(f"Run {run_id}: {outcome}, step {run.step} of {run.total_steps}.")
        if run.final_metrics:
            accuracy = run.final_metrics.get("rewards/accuracies")
            self.stdout.write(
                f"Eval reward accuracy {accuracy:.3f}; "
                f"artifact in {storage.describe(storage.artifacts(), run.artifact_path)}"
            )
