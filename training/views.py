"""Training pages (admins): runs and workers, a new run, a run's live progress, cancel, resume and the
artifact download. Every view checks the training permission; runs on snapshots of projects the user
cannot see are 404."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from labeling.access import projects_for
from labeling.models import Membership
from prefstudio import charts
from prefstudio.roles import TRAIN, requires
from training import services
from training.forms import RunForm
from training.models import RunMetric, TrainingRun
from training.queues import training_queue_snapshot

_LEADS = (Membership.Role.LEAD,)
CURVES = (
    ("loss", "Loss", None),
    ("rewards/accuracies", "Reward accuracy", (0.0, 1.0)),
    ("rewards/margins", "Reward margin", None),
)


def _runs(request: HttpRequest) -> Any:
    projects = projects_for(request.user, roles=_LEADS, include_archived=True)
    return TrainingRun.objects.filter(snapshot__project__in=projects).select_related(
        "snapshot__project", "created_by"
    )


def _run(request: HttpRequest, run_id: int) -> TrainingRun:
    return get_object_or_404(_runs(request), pk=run_id)


@requires(TRAIN)
@require_GET
def run_index(request: HttpRequest) -> HttpResponse:
    services.runs_reap()
    runs = list(_runs(request)[:100])
    by_job = {run.job_id: run for run in runs if run.job_id}
    queue = training_queue_snapshot()
    workers = [(w, by_job.get(w.job_id)) for w in queue.workers]
    context = {"queue": queue, "runs": runs, "workers": workers}
    return render(request, "training/run_index.html", context)


@requires(TRAIN)
@require_http_methods(["GET", "POST"])
def run_create(request: HttpRequest) -> HttpResponse:
    projects = projects_for(request.user, roles=_LEADS, include_archived=True)
    snapshots = services.trainable_snapshots(projects).order_by("-created_at")
    initial: dict[str, Any] = {}
    chosen = request.GET.get("snapshot")
    picked = snapshots.filter(uuid=chosen).first() if chosen else snapshots.first()
    if picked is not None:
        initial["snapshot"] = picked.uuid
        if picked.suggested_label_smoothing:
            initial["label_smoothing"] = picked.suggested_label_smoothing
    form = RunForm(request.POST or None, initial=initial, snapshots=snapshots)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.run_create(
                snapshot=form.cleaned_data["snapshot"],
                user=request.user,
                base_model=form.cleaned_data["base_model"],
                config=form.config(base_model=form.cleaned_data["base_model"]),
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Run {run.pk} is queued on '{services.queue_name()}'.")
            return redirect(run)
    context = {"form": form, "picked": picked, "base_models": services.base_models()}
    return render(request, "training/run_form.html", context, status=400 if form.errors else 200)


def _curves(run: TrainingRun) -> list[tuple[str, charts.LineChart]]:
    rows = list(run.metrics.order_by("step").values_list("kind", "step", "values"))
    curves = []
    for key, title, y_range in CURVES:
        series = []
        for kind, name in ((RunMetric.Kind.TRAIN, "train"), (RunMetric.Kind.EVAL, "eval")):
            points = [
                (float(step), float(values[key])) for k, step, values in rows if k == kind and key in values
            ]
            series.append((name, points))
        curves.append((title, charts.line_chart(series, y_range=y_range, dashed=("eval",), x_label="step",
                                                width=380, height=200)))  # fmt: skip
    return curves


def _comparison(run: TrainingRun) -> list[tuple[str, Any, Any]]:
    """(metric, at step 0, at the end) for the before/after table."""
    names = list(dict.fromkeys([*run.initial_metrics, *run.final_metrics]))
    return [(name, run.initial_metrics.get(name), run.final_metrics.get(name)) for name in names]


@requires(TRAIN)
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    services.runs_reap()
    run = _run(request, run_id)
    context = {
        "run": run,
        "curves": _curves(run),
        "comparison": _comparison(run),
        "files": services.artifact_files(run) if run.state == TrainingRun.State.SUCCEEDED else [],
    }
    if request.htmx:
        response = render(request, "training/run_detail.html#run-status", context)
        if run.finished:  # 286: htmx stops polling; the page reloads once to show the results
            stop = HttpResponseStopPolling(response.content)
            stop["HX-Refresh"] = "true"
            return stop
        return response
    return render(request, "training/run_detail.html", context)


@requires(TRAIN)
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = services.run_cancel(_run(request, run_id))
    if run.state == TrainingRun.State.CANCELED:
        messages.success(request, "Canceled before it started.")
    elif run.finished:
        messages.info(request, f"The run had already {run.get_state_display().lower()}.")
    else:
        messages.success(
            request, "Stopping after the current step; a checkpoint is saved so it can be resumed."
        )
    return redirect(run)


@requires(TRAIN)
@require_POST
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(request, run_id)
    try:
        services.run_resume(run)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Queued again: it continues from its last checkpoint.")
    return redirect(run)


class _Pipe:
    """A write-only file that hands written bytes to a generator (zipfile streams into it)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _zip_stream(files: list, prefix: str) -> Iterator[bytes]:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            with (
                path.open("rb") as source,
                archive.open(f"{prefix}/{path.name}", "w", force_zip64=True) as target,
            ):
                while chunk := source.read(1 << 20):
                    target.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()


@requires(TRAIN)
@require_GET
def run_download(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    run = _run(request, run_id)
    files = services.artifact_files(run)
    if run.state != TrainingRun.State.SUCCEEDED or not files:
        raise Http404("This run has no artifact to download.")
    name = f"prefstudio-run-{run.pk}"
    response = StreamingHttpResponse(_zip_stream(files, name), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response
