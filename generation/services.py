"""Generation jobs from the web app's and the command line's side: prompts from where people keep them,
create and enqueue, cancel, resume, and reap jobs whose worker died."""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from generation.models import GenerationJob
from generation.registry import UnknownModel, resolve
from prefstudio import job_rows, jobs

logger = logging.getLogger(__name__)

MAX_PROMPTS = 5000
MAX_PROMPT_CHARS = 20_000


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file, line and field."""


def prompts_from_project(
    project: Any, *, exclude: set[str] | None = None, limit: int = MAX_PROMPTS
) -> list[Any]:
    """The project's distinct prompts (text, or chat messages), oldest first; `exclude`: prompts to leave
    out, as `prompt_key` gives them."""
    seen, out = set(exclude or ()), []
    for prompt in project.pairs.order_by("pk").values_list("prompt", flat=True).iterator():
        key = prompt_key(prompt)
        if key in seen:
            continue
        seen.add(key)
        out.append(prompt)
        if len(out) >= limit:
            break
    return out


def prompt_key(prompt: Any) -> str:
    """A prompt (text or messages) as one comparable string; one user message is its text, as exports
    in the conversational shape write a text prompt."""
    one = isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], dict)
    if one and prompt[0].get("role") == "user":
        prompt = prompt[0].get("content", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def prompts_from_snapshot(snapshot: Any, *, split: str = "eval", limit: int = MAX_PROMPTS) -> list[Any]:
    """The prompts of a snapshot's split file (an export row's `prompt` or `input.messages`), distinct."""
    from training.services import split_files

    train, evaluation = split_files(snapshot)
    path = evaluation if split == "eval" else train
    if path is None:
        raise ValueError(f"snapshot {snapshot.pk} has no {split} split")
    out, seen = [], set()
    with open(path, encoding="utf-8") as file:
        for line in file:
            row = json.loads(line)
            prompt = row.get("prompt", row.get("input", {}).get("messages"))
            key = prompt_key(prompt) if prompt else ""
            if prompt and key not in seen:
                seen.add(key)
                out.append(prompt)
            if len(out) >= limit:
                break
    return out


def prompts_from_file(data: bytes, name: str, *, limit: int = MAX_PROMPTS) -> list[Any]:
    """Prompts from an uploaded JSONL (a `prompt` field: text or messages) or CSV (a `prompt` column) file.
    PromptFileError names the file, the line and what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    rows: list[tuple[int, Any]] = []
    if name.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if "prompt" not in (reader.fieldnames or []):
            raise PromptFileError(
                f"{name}: no 'prompt' column (columns: {', '.join(reader.fieldnames or [])})"
            )
        rows = [(reader.line_num, row["prompt"]) for row in reader]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise PromptFileError(f"{name}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "prompt" not in record:
                raise PromptFileError(f"{name}, line {number}: no 'prompt' field")
            rows.append((number, record["prompt"]))
    prompts = []
    for number, prompt in rows:
        _check_prompt(prompt, f"{name}, line {number}, field prompt")
        prompts.append(prompt)
    if not prompts:
        raise PromptFileError(f"{name}: no prompts")
    if len(prompts) > limit:
        raise PromptFileError(f"{name}: {len(prompts)} prompts; at most {limit} per job")
    return prompts


def _check_prompt(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptFileError(f"{where}: empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptFileError(f"{where}: {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
        return
    if not isinstance(prompt, list) or not prompt:
        raise PromptFileError(f"{where}: text or a list of chat messages")
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise PromptFileError(f"{where}, message {i}: needs a role of system, user or assistant")
        if not isinstance(message.get("content"), str):
            raise PromptFileError(f"{where}, message {i}: content must be text")


def job_create(
    *,
    kind: str,
    user: Any,
    model_refs: list[str],
    prompts: list[Any],
    source: str,
    params: dict[str, Any],
    samples: int = 1,
    project: Any = None,
    run: Any = None,
    enqueue: bool = True,
    allow_paths: bool = False,
) -> GenerationJob:
    """Record a generation job and (with `enqueue`) put it on the GPU queue once the transaction commits;
    without, it waits queued for `generation.runner.execute` here (the command line). ValueError
    (the message names the field) for models that cannot be called, too few samples or models, no
    prompts; prefstudio.jobs.QueueUnavailable, with nothing stored, when the queue does not answer."""
    from generation.backends.base import SamplingParams

    if kind not in GenerationJob.Kind.values:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(GenerationJob.Kind.values)}")
    refs = []
    for ref in model_refs:
        try:
            refs.append(resolve(ref, allow_paths=allow_paths).ref)
        except UnknownModel as exc:
            raise ValueError(f"model: {exc}") from None
    if kind in (GenerationJob.Kind.SAMPLES, GenerationJob.Kind.NEXT_ROUND) and (
        len(refs) != 1 or samples < 2
    ):
        raise ValueError("samples: N samples come from one model, with N at least 2")
    versus = (GenerationJob.Kind.VERSUS, GenerationJob.Kind.EVALUATION)
    if kind in versus and (len(set(refs)) < 2 or samples != 1):
        raise ValueError("models: a comparison needs two or more different models, one answer each")
    if kind != GenerationJob.Kind.PLAYGROUND and project is None:
        raise ValueError("project: the pairs need a project to go to")
    if not prompts:
        raise ValueError("prompts: none to answer")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"prompts: {len(prompts)}; at most {MAX_PROMPTS} per job")
    checked = SamplingParams(**params)  # ValueError names the setting
    if enqueue and not jobs.queue_available(settings.PREFSTUDIO_TRAINING_QUEUE):
        raise jobs.QueueUnavailable()
    with transaction.atomic():
        job = GenerationJob.objects.create(
            kind=kind, project=project, run=run, created_by=user, model_refs=refs,
            params={"max_new_tokens": checked.max_new_tokens, "temperature": checked.temperature,
                    "top_p": checked.top_p, "seed": checked.seed},
            samples=samples, prompts=prompts, source=source[:300], total=len(prompts) * len(refs),
        )  # fmt: skip
        if enqueue:
            transaction.on_commit(lambda: job_enqueue(job))
    return job


def job_enqueue(job: GenerationJob) -> None:
    """Put the job on the GPU queue; a queue that fails now leaves it queued with a note (jobs_reap
    enqueues it again)."""
    job_rows.enqueue(
        GenerationJob, job, queue=settings.PREFSTUDIO_TRAINING_QUEUE, func="generation.tasks.generate",
        on_failure="generation.tasks.generation_job_failed",
    )  # fmt: skip


def job_cancel(job: GenerationJob) -> GenerationJob:
    """Ask the job to stop: a queued one at once, a running one between two chunks of prompts."""
    return job_rows.request_cancel(GenerationJob, job.pk, queue=settings.PREFSTUDIO_TRAINING_QUEUE)


def job_resume(job: GenerationJob) -> GenerationJob:
    """Queue a failed or canceled job again: it answers only the prompts not answered yet."""
    if not jobs.queue_available(settings.PREFSTUDIO_TRAINING_QUEUE):
        raise jobs.QueueUnavailable()
    return job_rows.requeue(GenerationJob, job.pk, enqueue=job_enqueue, what="jobs")


def next_round(run: Any, user: Any, *, samples: int = 2, max_new_tokens: int = 256) -> GenerationJob:
    """Two samples per prompt from the tuned model of a succeeded run, on the project's prompts it was not
    trained on, into the project as a new batch (iterative, on-policy DPO). ValueError when no prompt is
    left."""
    trained = {prompt_key(p) for p in prompts_from_snapshot(run.snapshot, split="train", limit=10**7)}
    project = run.snapshot.project
    prompts = prompts_from_project(project, exclude=trained)
    if not prompts:
        raise ValueError("prompts: every prompt of the project was in the run's training data")
    return job_create(
        kind=GenerationJob.Kind.NEXT_ROUND, user=user, model_refs=[f"run:{run.pk}"], prompts=prompts,
        source=f"{project.name}: {len(prompts)} prompts run {run.pk} was not trained on", samples=samples,
        params={"max_new_tokens": max_new_tokens, "temperature": 1.0, "top_p": 1.0, "seed": run.pk},
        project=project, run=run,
    )  # fmt: skip


def jobs_reap() -> int:
    """Fail running jobs whose worker went silent (a reaper of prefstudio.jobs); how many."""
    return job_rows.reap_lost(GenerationJob, then="Resume answers only the prompts not answered yet.")
