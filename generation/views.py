"""Pages of generation: jobs that answer prompts into a project's batch, the endpoints admins register,
and the playground (two models' answers side by side). Generation always runs in a worker."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from generation import registry, services
from generation.forms import EndpointForm, JobForm, PlaygroundForm
from generation.models import Endpoint, GenerationAnswer, GenerationJob
from labeling.access import projects_for
from labeling.display import markdown_html
from labeling.models import ExportSnapshot, Membership
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import EXPORT, TRAIN, requires, user_can
from training.models import TrainingRun

_LEADS = (Membership.Role.LEAD,)


def _projects(request: HttpRequest) -> Any:
    return projects_for(request.user, roles=_LEADS)


def _jobs(request: HttpRequest) -> Any:
    return GenerationJob.objects.filter(project__in=_projects(request)).select_related("project", "batch")


@requires(EXPORT)
@require_GET
def job_index(request: HttpRequest) -> HttpResponse:
    services.jobs_reap()
    context = {
        "jobs": _jobs(request).exclude(kind=GenerationJob.Kind.PLAYGROUND)[:100],
        "endpoints": Endpoint.objects.all() if user_can(request.user, TRAIN) else None,
        "can_manage": user_can(request.user, TRAIN),
    }
    return render(request, "generation/job_index.html", context)


@requires(EXPORT)
@require_http_methods(["GET", "POST"])
def job_create(request: HttpRequest) -> HttpResponse:
    projects = _projects(request)
    snapshots = ExportSnapshot.objects.filter(project__in=projects, state=ExportSnapshot.State.DONE)
    form = JobForm(request.POST or None, request.FILES or None, projects=projects, snapshots=snapshots)
    form.fields["models"].choices = registry.choices_for(request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        project = data["project"]
        if data["source"] == "file":
            prompts, source = data["file_prompts"], f"file {data['prompt_file'].name}"
        elif data["source"] == "snapshot":
            prompts = services.prompts_from_snapshot(data["snapshot"])
            when = data["snapshot"].created_at
            source = f"{project.name}: eval prompts of the snapshot of {when:%Y-%m-%d %H:%M}"
        else:
            prompts, source = services.prompts_from_project(project), f"{project.name}: its prompts"
        prompts = prompts[: data["limit"]]
        kind = data["kind"]
        try:
            job = services.job_create(
                kind=kind, user=request.user, model_refs=data["models"], prompts=prompts, source=source,
                samples=data["samples"] if kind == GenerationJob.Kind.SAMPLES else 1, project=project,
                params={"max_new_tokens": data["max_new_tokens"], "temperature": data["temperature"],
                        "top_p": data["top_p"], "seed": data["seed"]},
            )  # fmt: skip
        except (ValueError, QueueUnavailable) as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(job)
    status = 400 if form.errors else 200
    return render(request, "generation/job_form.html", {"form": form}, status=status)


@requires(EXPORT)
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(_jobs(request), pk=job_id)
    if not job.finished:
        services.jobs_reap()
        job.refresh_from_db()
    context = {"job": job}
    if request.htmx:
        response = render(request, "generation/job_detail.html#job-status", context)
        return HttpResponseStopPolling(response.content) if job.finished else response
    return render(request, "generation/job_detail.html", context)


@requires(EXPORT)
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = services.job_cancel(get_object_or_404(_jobs(request), pk=job_id))
    messages.info(request, "Canceled." if job.state == "canceled" else "Stopping after the current prompts…")
    return redirect(job)


@requires(EXPORT)
@require_POST
def job_resume(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(_jobs(request), pk=job_id)
    try:
        services.job_resume(job)
    except (ValueError, QueueUnavailable) as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, "Queued again: it answers only the prompts not answered yet.")
    return redirect(job)


@requires(TRAIN)
@require_http_methods(["GET", "POST"])
def endpoint_create(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        endpoint = form.save(commit=False)
        endpoint.created_by = request.user
        endpoint.save()
        messages.success(request, f"Added endpoint:{endpoint.name}.")
        return redirect("generation:job-index")
    return render(
        request, "generation/endpoint_form.html", {"form": form}, status=400 if form.errors else 200
    )


@requires(TRAIN)
@require_POST
def endpoint_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, pk=endpoint_id)
    endpoint.delete()
    messages.success(request, f"Removed endpoint:{endpoint.name}.")
    return redirect("generation:job-index")


def _eval_prompts(run: TrainingRun | None) -> list[Any]:
    if run is None:
        return []
    try:
        return services.prompts_from_snapshot(run.snapshot, limit=100)
    except (OSError, ValueError, KeyError):
        return []


@requires(TRAIN)
@require_http_methods(["GET", "POST"])
def playground(request: HttpRequest) -> HttpResponse:
    """Two models' answers to one prompt, side by side: a run's base and its tuned model by default."""
    run = None
    if run_id := request.GET.get("run") or request.POST.get("run"):
        run = get_object_or_404(TrainingRun, pk=int(run_id) if str(run_id).isdigit() else -1)
    initial = {}
    if run is not None:
        initial = {"left": f"base:{run.base_model}", "right": f"run:{run.pk}"}
    elif base := request.GET.get("base"):
        initial = {"left": f"base:{base}", "right": f"base:{base}"}
    form = PlaygroundForm(request.POST or None, initial=initial, eval_prompts=_eval_prompts(run))
    if request.method == "POST" and form.is_valid():
        busy = GenerationJob.objects.filter(
            created_by=request.user, kind=GenerationJob.Kind.PLAYGROUND, state__in=("queued", "running")
        ).first()
        if busy is not None:
            form.add_error(None, "Your previous playground request is still running: one at a time.")
        else:
            data = form.cleaned_data
            refs = list(dict.fromkeys([data["left"], data["right"]]))
            try:
                job = services.job_create(
                    kind=GenerationJob.Kind.PLAYGROUND, user=request.user, model_refs=refs,
                    prompts=[data["the_prompt"]], source="playground", run=run,
                    params={"max_new_tokens": data["max_new_tokens"], "temperature": data["temperature"],
                            "top_p": 1.0, "seed": data["seed"]},
                )  # fmt: skip
            except (ValueError, QueueUnavailable) as exc:
                form.add_error(None, str(exc))
            else:
                return redirect(job)
    recent = GenerationJob.objects.filter(created_by=request.user, kind=GenerationJob.Kind.PLAYGROUND)[:10]
    context = {"form": form, "run": run, "recent": recent}
    return render(request, "generation/playground.html", context, status=400 if form.errors else 200)


@requires(TRAIN)
@require_GET
def playground_job(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob, pk=job_id, kind=GenerationJob.Kind.PLAYGROUND)
    if job.created_by_id != request.user.pk:
        raise Http404
    if not job.finished:
        services.jobs_reap()
        job.refresh_from_db()
    answers = {a.model_ref: a for a in GenerationAnswer.objects.filter(job=job, prompt_index=0, sample=0)}
    columns = []
    for ref in job.model_refs:
        answer = answers.get(ref)
        label = next((lbl for r, lbl in registry.choices() if r == ref), ref)
        html = markdown_html(answer.text) if answer and answer.text else None
        columns.append({"ref": ref, "label": label, "answer": answer, "html": html})
    prompt = job.prompts[0]
    context = {
        "job": job,
        "columns": columns,
        "prompt_html": markdown_html(prompt) if isinstance(prompt, str) else None,
        "prompt_messages": prompt if not isinstance(prompt, str) else None,
    }
    if request.htmx:
        response = render(request, "generation/playground_job.html#answers", context)
        return HttpResponseStopPolling(response.content) if job.finished else response
    return render(request, "generation/playground_job.html", context)


@requires(TRAIN)
@require_POST
def next_round(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id, snapshot__project__in=_projects(request))
    try:
        job = services.next_round(run, request.user)
    except (ValueError, QueueUnavailable) as exc:
        messages.error(request, str(exc))
        return redirect(run)
    return redirect(job)
