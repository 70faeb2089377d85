"""Training pages (admins): runs and workers, a new run, a run's live progress, cancel, resume and the
artifact download. Every view checks the training permission; runs on snapshots of projects the user
cannot see are 404."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from generation.registry import vllm_command
from labeling.access import projects_for
from labeling.models import Membership
from prefstudio import charts, storage
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import TRAIN, requires
from training import services
from training.config import REFERENCE_FREE_LOSS_TYPES
from training.data import REASON_TEXT
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
    """The New run form. Its *Check the data* button (`action=check`) shows what the run would train on
    without queueing anything: the partial alone for htmx, the whole page otherwise."""
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
    checking = request.POST.get("action") == "check"
    check = None
    if request.method == "POST" and form.is_valid():
        data, base_model = form.cleaned_data, form.cleaned_data["base_model"]
        try:
            if checking:
                check = services.data_check(
                    snapshot=data["snapshot"],
                    base_model=base_model,
                    config=form.config(base_model=base_model),
                )
            else:
                run = services.run_create(
                    snapshot=data["snapshot"],
                    user=request.user,
                    base_model=base_model,
                    config=form.config(base_model=base_model),
                    processes=data.get("processes"),
                )
                return redirect(run)  # the run page says it is queued, until a worker starts it
        except (ValueError, QueueUnavailable) as exc:
            form.add_error(None, str(exc))
    context = {
        "form": form,
        "picked": picked,
        "base_models": services.base_models(),
        "check": check,
        "check_view": _check_view(check),
        "checking": checking,
    }
    status = 400 if form.errors else 200
    if checking and request.htmx:
        return render(request, "training/run_form.html#data-check", context, status=status)
    return render(request, "training/run_form.html", context, status=status)


def _check_view(check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The data check with its histograms as SVG geometry, and its reasons explained."""
    if not check or "splits" not in check:
        return None
    splits = []
    for name, split in check["splits"].items():
        histogram = split["histogram"]
        chart = charts.histogram(
            histogram["edges"],
            histogram["counts"],
            over_label=f"longer than {histogram['max_length']} →",
            x_label="tokens",
        )
        splits.append({"name": name, "report": split, "chart": chart, "reasons": _reasons(split)})
    examples = [
        {**example, "segments": [_segment(segment) for segment in example["segments"]]}
        for example in check["examples"]
    ]
    return {"splits": splits, "examples": examples}


# Tokens shown per part of an example pair: the start of a prompt is skipped (its end is what the model
# sees last), the end of a completion.
SHOWN_TOKENS = 300


def _segment(segment: dict[str, Any]) -> dict[str, Any]:
    pieces = [(text.replace("\n", "↵\n"), special, cut) for text, special, cut in segment["pieces"]]
    hidden = max(0, len(pieces) - SHOWN_TOKENS)
    if segment["part"] == "prompt":
        shown, before, after = pieces[hidden:], hidden, 0
    else:
        shown, before, after = pieces[:SHOWN_TOKENS], 0, hidden
    return {**segment, "pieces": shown, "hidden_before": before, "hidden_after": after}


def _reasons(report: dict[str, Any]) -> list[dict[str, Any]]:
    """(kind, reason, meaning, count, first ids) of a data report, dropped first."""
    rows = []
    for kind in ("dropped", "changed"):
        for reason, count in report.get(f"{kind}_counts", {}).items():
            ids = report.get(kind, {}).get(reason, [])
            meaning = REASON_TEXT.get(reason, "")
            rows.append({"kind": kind, "reason": reason, "meaning": meaning, "count": count,
                         "ids": ids[:10], "more": count - len(ids[:10])})  # fmt: skip
    return rows


def _latest_evaluation(run: TrainingRun) -> dict[str, Any] | None:
    """The run's newest blind evaluation round with its results, or None."""
    from evaluation.services import round_results

    round_ = run.evaluation_rounds.select_related("project", "generation_job").first()
    return {"round": round_, "results": round_results(round_)} if round_ is not None else None


def _zero_at_start(run: TrainingRun, name: str) -> bool:
    """Whether `name` is an implicit reward, zero for every pair at step 0 by construction (every loss with a
    reference model; SimPO's rewards are the policy's own and mean something from the start)."""
    return name.startswith("rewards/") and run.config.get("loss_type") not in REFERENCE_FREE_LOSS_TYPES


def _curves(run: TrainingRun) -> list[tuple[str, charts.LineChart]]:
    rows = list(run.metrics.order_by("step").values_list("kind", "step", "values"))
    curves = []
    for key, title, y_range in CURVES:
        series = []
        hide_start = _zero_at_start(run, key)  # not a baseline: no point drawn for it
        for kind, name in ((RunMetric.Kind.TRAIN, "train"), (RunMetric.Kind.EVAL, "eval")):
            points = [
                (float(step), float(values[key]))
                for k, step, values in rows
                if k == kind
                and key in values
                and not (hide_start and kind == RunMetric.Kind.EVAL and step == 0)
            ]
            series.append((name, points))
        curves.append((title, charts.line_chart(series, y_range=y_range, dashed=("eval",), x_label="step",
                                                width=380, height=200)))  # fmt: skip
    return curves


def _comparison(run: TrainingRun) -> list[tuple[str, Any, Any]]:
    """(metric, at step 0, at the end) for the before/after table. Implicit rewards that are zero for every
    pair at step 0 by construction get no step-0 value: it is not a baseline."""
    names = list(dict.fromkeys([*run.initial_metrics, *run.final_metrics]))
    return [
        (
            name,
            None if _zero_at_start(run, name) else run.initial_metrics.get(name),
            run.final_metrics.get(name),
        )
        for name in names
    ]


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
        "vllm_command": vllm_command(run) if run.state == TrainingRun.State.SUCCEEDED else "",
        "evaluation": _latest_evaluation(run),
        "data": [(name, report, _reasons(report)) for name, report in (run.data_report or {}).items()],
        "queue_name": services.queue_name(),
        # Shown by the Resume button and by a queued retry's notice: not read on a running run's polls.
        "resume_from": services.checkpoint_step(run)
        if run.resumable or (run.state == TrainingRun.State.QUEUED and run.attempts)
        else None,
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
    except (ValueError, QueueUnavailable) as exc:
        messages.error(request, str(exc))
    else:
        step = services.checkpoint_step(run)
        where = (
            f"after step {step}, its last checkpoint" if step else "from the start: no checkpoint was written"
        )
        messages.success(request, f"Queued again: it continues {where}.")
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


def _zip_stream(folder: str, files: list[str], prefix: str) -> Iterator[bytes]:
    """A zip of the stored files `folder/<name>` as `prefix/<name>`, built while it is sent: each file read
    from the artifacts storage in chunks, so memory holds one chunk whatever the sizes."""
    pipe = _Pipe()
    artifacts = storage.artifacts()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            with archive.open(f"{prefix}/{name}", "w", force_zip64=True) as target:
                for chunk in storage.iter_chunks(artifacts, f"{folder}/{name}"):
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
    stream = _zip_stream(services.artifact_name(run), files, name)
    response = StreamingHttpResponse(stream, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading quote (OWASP,
    "CSV Injection"). Pair ids come from imported files."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@requires(TRAIN)
@require_GET
def run_data_ids(request: HttpRequest, run_id: int) -> HttpResponse:
    """Every dropped and changed pair of a run as CSV (split, kind, reason, id), from the report the engine
    wrote before training (all ids), or the run's stored report (the first ids of each reason)."""
    run = _run(request, run_id)
    report = services.full_data_report(run)
    if not report:
        raise Http404("This run has no data report yet.")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "kind", "reason", "id"])
    for split, data in report.items():
        for kind in ("dropped", "changed"):
            for reason, ids in data.get(kind, {}).items():
                writer.writerows([split, kind, reason, _cell(pair_id)] for pair_id in ids)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="prefstudio-run-{run.pk}-pairs.csv"'
    return response
