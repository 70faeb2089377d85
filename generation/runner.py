"""A generation job on a worker: answer the job's prompts with each of its models, keeping every answer
as it comes (so a restarted job skips what is done), then pair the answers into a batch of the project.

Imports the backends (and so torch) only inside `execute`: the web process never loads them.
"""

from __future__ import annotations

import io
import json
import random
import time
from itertools import combinations
from typing import Any

from django.db import transaction
from django.db.models import Count

from generation.models import GenerationAnswer, GenerationJob
from generation.registry import EndpointSpec, LocalSpec, resolve
from prefstudio import job_rows

# Prompts answered per unit of work: answers are saved, progress written and a cancel honoured between
# two chunks.
CHUNK = 16
LOG_LINES = 40


def execute(job_pk: int, *, worker: str = "", job_id: str = "") -> str:
    """Run the generation job with this id to its end; a word on how it ended. A failure is written to
    the row, and the exception re-raised for RQ."""
    from generation.backends.base import GenerationStopped

    return job_rows.run(
        GenerationJob, job_pk, work=_work, what="The generation", stopped=(GenerationStopped,),
        kept="the answers so far are kept", worker=worker, job_id=job_id, lines=LOG_LINES,
    )  # fmt: skip


def _work(job: GenerationJob, log: job_rows.LogTail) -> dict[str, Any]:
    """Answer every prompt not answered yet, then make the pairs (not for the playground)."""
    _answer_all(job, log)
    return _make_pairs(job, log) if job.kind != GenerationJob.Kind.PLAYGROUND else {}


def _answered(job: GenerationJob, ref: str) -> set[int]:
    """Prompts `ref` has answered with all of the job's samples."""
    rows = (
        GenerationAnswer.objects.filter(job=job, model_ref=ref)
        .values("prompt_index")
        .annotate(n=Count("id"))
        .filter(n__gte=job.samples)
    )
    return {row["prompt_index"] for row in rows}


def _answer_all(job: GenerationJob, log: job_rows.LogTail) -> None:
    from generation.backends.base import SamplingParams

    params = SamplingParams(**job.params)
    specs = [resolve(ref, allow_paths=True) for ref in job.model_refs]  # checked when the job was made
    total = len(job.prompts) * len(specs)
    done = sum(len(_answered(job, spec.ref)) for spec in specs)
    GenerationJob.objects.filter(pk=job.pk).update(total=total, done=done)
    if done:
        log(f"{done} of {total} prompt answers were already there; answering the rest.")
    backends: dict[str, Any] = {}
    started, tokens, fresh = time.monotonic(), 0, 0
    for spec in specs:
        answered = _answered(job, spec.ref)
        todo = [i for i in range(len(job.prompts)) if i not in answered]
        if not todo:
            continue
        backend, adapter = _backend(spec, backends, log)
        log(f"{spec.label}: {len(todo)} prompts, {job.samples} answer(s) each.")
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            seeded = params if params.seed is None else _with_seed(params, params.seed + chunk[0])
            kwargs: dict[str, Any] = {"adapter": adapter} if isinstance(spec, LocalSpec) else {}
            answers = backend.generate(
                [job.prompts[i] for i in chunk], seeded, n=job.samples,
                should_stop=lambda: job_rows.cancel_requested(GenerationJob, job.pk), **kwargs,
            )  # fmt: skip
            _save(job, spec.ref, chunk, answers)
            done += len(chunk)
            fresh += len(chunk)
            tokens += sum(a.tokens for per_prompt in answers for a in per_prompt)
            elapsed = max(time.monotonic() - started, 1e-6)
            GenerationJob.objects.filter(pk=job.pk).update(
                done=done, tokens_per_second=tokens / elapsed, eta_seconds=(total - done) * elapsed / fresh
            )


def _with_seed(params: Any, seed: int) -> Any:
    from dataclasses import replace

    return replace(params, seed=seed % 2**32)


def _backend(spec: Any, backends: dict[str, Any], log: job_rows.LogTail) -> tuple[Any, str | None]:
    """The backend that answers `spec` (one local model in memory per base path, whatever its adapters)
    and the adapter to use."""
    if isinstance(spec, EndpointSpec):
        from generation.backends.endpoint import EndpointBackend

        return EndpointBackend(spec.base_url, spec.model, api_key=spec.api_key()), None
    from generation.backends.local import LocalBackend

    backend = backends.get(spec.base_path)
    if backend is None:
        log(f"Loading {spec.base_path}.")
        backend = backends[spec.base_path] = LocalBackend(spec.base_path)
    if spec.adapter_name and spec.adapter_name not in backend.adapters:
        backend.load_adapter(spec.adapter_name, spec.local_adapter())
    return backend, spec.adapter_name


def clean_text(text: str) -> str:
    """Model output as storable text: NUL characters (which PostgreSQL refuses in text) become U+FFFD."""
    return text.replace("\x00", "\ufffd")


def _save(job: GenerationJob, ref: str, chunk: list[int], answers: list[list[Any]]) -> None:
    rows = [
        GenerationAnswer(
            job=job,
            prompt_index=i,
            model_ref=ref,
            sample=s,
            text=clean_text(a.text),
            tokens=a.tokens,
            finish_reason=a.finish_reason,
        )  # fmt: skip
        for i, per_prompt in zip(chunk, answers, strict=True)
        for s, a in enumerate(per_prompt)
    ]
    GenerationAnswer.objects.bulk_create(rows, ignore_conflicts=True)


def pair_records(job: GenerationJob) -> tuple[list[dict[str, Any]], int]:
    """The job's answers as import records (the import's pair layout, with the models and the settings in
    the metadata), and how many pairs of identical answers were left out.

    N samples from one model: every pair of distinct answers to a prompt. Several models: one pair per two
    models (their first answers)."""
    by_prompt: dict[int, dict[str, list[str]]] = {}
    for answer in GenerationAnswer.objects.filter(job=job).order_by("prompt_index", "model_ref", "sample"):
        by_prompt.setdefault(answer.prompt_index, {}).setdefault(answer.model_ref, []).append(answer.text)
    settings_meta = {"generation_job": job.pk, **job.params, "samples": job.samples}
    records, identical = [], 0
    for index, by_model in sorted(by_prompt.items()):
        if len(job.model_refs) == 1:
            ref = job.model_refs[0]
            candidates = [(ref, text) for text in by_model.get(ref, [])]
        else:
            candidates = [(ref, by_model[ref][0]) for ref in job.model_refs if by_model.get(ref)]
        candidates = [(ref, text) for ref, text in candidates if text.strip()]  # an empty answer: no pair
        sides = random.Random(job.pk * 1_000_003 + index)  # which model is A: random, and recorded
        for (ref_a, a), (ref_b, b) in combinations(candidates, 2):
            if a.strip() == b.strip():
                identical += 1
                continue
            if len(job.model_refs) > 1 and sides.random() < 0.5:
                (ref_a, a), (ref_b, b) = (ref_b, b), (ref_a, a)
            records.append({
                "prompt": job.prompts[index], "response_a": a, "response_b": b,
                "model_a": ref_a, "model_b": ref_b,
                "metadata": {**settings_meta, "prompt_index": index},
            })  # fmt: skip
    return records, identical


def _make_pairs(job: GenerationJob, log: job_rows.LogTail) -> dict[str, Any]:
    """Import the answers' pairs into the job's project as a batch "generated by ..."; the row's fields."""
    from labeling.batches import ImportFailed, batch_claim, batch_create, batch_run

    records, identical = pair_records(job)
    if not records:
        log(f"No pairs to import: every pair of answers was identical ({identical}).")
        return {"pairs_made": 0, "identical_skipped": identical}
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    names = (
        " vs ".join(job.model_refs)
        if len(job.model_refs) > 1
        else f"{job.samples} samples of {job.model_refs[0]}"
    )
    with transaction.atomic():
        batch = batch_create(
            project=job.project, user=job.created_by, upload=io.BytesIO(data), size=len(data),
            source_name=f"generated by job {job.pk}: {names}.jsonl", skip_invalid=False,
            evaluation=job.kind == GenerationJob.Kind.EVALUATION,
        )  # fmt: skip
        GenerationJob.objects.filter(pk=job.pk).update(batch=batch)
    batch_claim(batch, background=False)
    try:
        summary = batch_run(batch)
    except ImportFailed as exc:
        raise RuntimeError(f"the pairs could not be imported: {exc}") from exc
    log(f"Imported {summary.imported} pairs ({summary.duplicates} already in the project); "
        f"{identical} pairs of identical answers left out.")  # fmt: skip
    return {"pairs_made": summary.imported, "identical_skipped": identical, "batch": batch}
