"""A training run on a worker: load the run, call the engine with callbacks that write progress and
metrics to the run's row, keep a heartbeat, honour a cancel, save the outcome.

With a remote artifacts storage (prefstudio.storage) the run is written in a local folder and mirrored to
the object store after each checkpoint and at the end; a retry on another host downloads what was stored
first and continues from the last checkpoint. A run of more than one process (one per GPU) runs the engine
under torchrun in a child process (training.launch), with the same callbacks.

Imports the engine (and so torch) only inside `execute`: the web process never loads it.
"""

from __future__ import annotations

import errno
import shutil
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from prefstudio import job_rows, jobs, storage
from training.models import RunMetric, TrainingRun
from training.services import LOG_TAIL_LINES, artifact_dir, artifact_name, record_metric, split_files

# Progress rows are written at most this often (seconds), so that fast steps on a GPU do not turn
# into a database write each; metrics are kept for every step regardless.
PROGRESS_EVERY = 1.0
# Free space under which a checkpoint writer's short write is taken for a full disk.
DISK_FULL_BYTES = 64 * 2**20


def _device_name() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _processes(run: TrainingRun) -> int:
    """The processes the run trains with: those it asked for, else one per GPU of this host (1 on CPU).
    Raises ValueError when it asks for more processes than this host has GPUs (each takes its own); on a
    CPU any number runs (gloo), which the tests use."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not run.processes:
        return max(1, gpus)
    if gpus and run.processes > gpus:
        raise ValueError(
            f"The run asks for {run.processes} processes, one per GPU, and this worker's host has {gpus} "
            "GPU(s). Queue it with fewer processes, or let a larger host's worker take it."
        )
    return run.processes


class _Recorder:
    """The engine's callbacks, writing to the run's row."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.lines: deque[str] = deque(run.log_tail.splitlines()[-LOG_TAIL_LINES:], maxlen=LOG_TAIL_LINES)
        self.last_write = self.last_phase_write = 0.0
        self.phase_name = ""

    def progress(self, progress: Any) -> None:
        record_metric(self.run.pk, RunMetric.Kind.TRAIN, progress.step, progress.metrics)
        now = timezone.now()
        last = progress.step >= progress.total_steps
        if last or now.timestamp() - self.last_write >= PROGRESS_EVERY:
            self.last_write = now.timestamp()
            TrainingRun.objects.filter(pk=self.run.pk).update(
                step=progress.step,
                total_steps=progress.total_steps,
                tokens_per_second=progress.tokens_per_second,
                eta_seconds=progress.eta_seconds,
                heartbeat_at=now,
                log_tail="\n".join(self.lines),
            )

    def evaluation(self, step: int, metrics: dict[str, float]) -> None:
        record_metric(self.run.pk, RunMetric.Kind.EVAL, step, metrics)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def phase(self, name: str, done: int, total: int) -> None:
        """A new phase is written at once, its progress at most every PROGRESS_EVERY seconds."""
        now = timezone.now().timestamp()
        if name == self.phase_name and done < total and now - self.last_phase_write < PROGRESS_EVERY:
            return
        self.phase_name, self.last_phase_write = name, now
        TrainingRun.objects.filter(pk=self.run.pk).update(phase=name, phase_done=done, phase_total=total)

    def data(self, report: dict[str, Any]) -> None:
        """The data report as soon as the pairs are read, so a run that fails later still shows it."""
        TrainingRun.objects.filter(pk=self.run.pk).update(data_report=report, log_tail="\n".join(self.lines))

    def should_stop(self) -> bool:
        """Asked before every step: one primary-key lookup, so a cancel ends the run within a step."""
        return job_rows.cancel_requested(TrainingRun, self.run.pk)


def _start(run_id: int, worker: str, job_id: str = "") -> TrainingRun | None:
    """Claim the run for this worker (prefstudio.job_rows.claim): queued -> running, or its own job's
    retry taking it up again. None when it is neither."""
    return job_rows.claim(TrainingRun, run_id, worker=worker, job_id=job_id, device=_device_name())


def execute(run_id: int, *, worker: str = "", job_id: str = "") -> str:
    """Run the run with this id to its end; a word on how it ended. A failed run's error is written to
    the row, and the exception re-raised for RQ (its failure callback, see training/tasks.py). `job_id`:
    the RQ job running it, which may take its own running run up again (a retry)."""
    from training.config import TrainConfig
    from training.engine import Callbacks, Display, train

    run = _start(run_id, worker, job_id)
    if run is None:
        return "not queued"
    heartbeat = job_rows.Heartbeat(TrainingRun, run.pk)
    recorder = _Recorder(run)
    heartbeat.start()
    output = artifact_dir(run)
    mirror = storage.Mirror(storage.artifacts(), artifact_name(run), output)
    try:
        processes = _processes(run)
        TrainingRun.objects.filter(pk=run.pk).update(world_size=processes)
        train_file, eval_file = split_files(run.snapshot)
        if run.attempts > 1 and (pulled := mirror.pull()):
            recorder.log(f"Downloaded {pulled} file(s) of the run (checkpoints) from the artifact storage.")
        resume = run.attempts > 1 and (output / "checkpoints").is_dir()
        verb = "Resuming" if resume else "Starting"
        where = f"{processes} processes" if processes > 1 else run.device
        recorder.log(f"{verb} on {run.worker_host} ({where}), attempt {run.attempts}.")
        engine_args: dict[str, Any] = {
            "train_file": train_file,
            "eval_file": eval_file,
            "output_dir": output,
            "callbacks": Callbacks(
                on_progress=recorder.progress,
                on_eval=recorder.evaluation,
                on_log=recorder.log,
                should_stop=recorder.should_stop,
                on_data=recorder.data,
                on_phase=recorder.phase,
                on_checkpoint=lambda _path: mirror.push(),
                on_outputs=lambda _path: mirror.push(),
            ),
            "resume": resume,
            "display": Display(
                model=run.base_model,
                model_source=settings.PREFSTUDIO_BASE_MODELS.get(run.base_model),
                roots=(  # a worker's copies of stored files keep their storage names under these
                    Path(settings.MEDIA_ROOT),
                    Path(settings.ARTIFACT_ROOT),
                    Path(settings.PREFSTUDIO_CACHE_DIR) / "media",
                    Path(settings.PREFSTUDIO_CACHE_DIR) / "artifacts",
                ),
            ),
        }
        config = TrainConfig.from_dict(run.config)
        if processes > 1:
            from training.launch import launch

            result = launch(config, processes=processes, **engine_args)
        else:
            result = train(config, **engine_args)
    except Exception as exc:
        recorder.log("".join(traceback.format_exception_only(exc)).strip())
        if jobs.will_retry(exc):  # taken up again from its checkpoint on a fresh connection
            raise
        if getattr(exc, "stop_requested", False):  # a launched run that a cancel had to kill
            _finish(run, recorder, state=TrainingRun.State.CANCELED, error=f"Stopped by force: {exc}")
            return "canceled"
        _finish(run, recorder, state=TrainingRun.State.FAILED, error=_explain(exc))
        raise
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=5)
    if result.status == "stopped":
        _finish(run, recorder, state=TrainingRun.State.CANCELED, step=result.step, total=result.total_steps,
                initial=result.initial_metrics)  # fmt: skip
        return "canceled"
    _finish(run, recorder, state=TrainingRun.State.SUCCEEDED, step=result.step, total=result.total_steps,
            initial=result.initial_metrics, final=result.metrics or {}, data=result.data,
            device=result.device, share_change=result.share_change or {})  # fmt: skip
    return "succeeded"


def _explain(exc: Exception) -> str:
    """The run's error in one line. A full disk says so and where: torch's checkpoint writer reports it
    as "unexpected pos ..." or "PytorchStreamWriter failed writing file", with no errno."""
    text = str(exc)
    launched = type(exc).__name__ == "LaunchError"  # training.launch: a rank's failure, said in words
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if launched:
        text = f"{text} {getattr(exc, 'error', '') or ''}"
        full = f"[Errno {errno.ENOSPC}]" in text
    if not full and isinstance(exc, RuntimeError):
        full = ("unexpected pos" in text or "failed writing file" in text) and _disk_nearly_full()
    if full:
        free = _free_bytes(_work_root())
        return (
            f"The disk is full: the run could not write to {_storage_label()} ({free // 2**20} MiB free). "
            "Free some space, then Resume: it continues from the last checkpoint."
        )
    return str(exc) if launched else f"{type(exc).__name__}: {text}"


def _free_bytes(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _disk_nearly_full() -> bool:
    return _free_bytes(_work_root()) < DISK_FULL_BYTES


def _work_root() -> Path:
    """The disk a run writes to: the artifact storage's folder, or the local cache of a remote one."""
    if storage.is_remote(storage.artifacts()):
        return Path(settings.PREFSTUDIO_CACHE_DIR)
    return Path(settings.ARTIFACT_ROOT)


def _storage_label() -> str:
    if storage.is_remote(storage.artifacts()):
        return "the local copy of the run (PREFSTUDIO_CACHE_DIR)"
    return "the artifact storage (ARTIFACT_ROOT)"


def _finish(
    run: TrainingRun,
    recorder: _Recorder,
    *,
    state: str,
    error: str = "",
    step: int | None = None,
    total: int | None = None,
    initial: dict | None = None,
    final: dict | None = None,
    data: dict | None = None,
    device: str | None = None,
    share_change: dict | None = None,
) -> None:
    fields: dict[str, Any] = {
        "state": state,
        "finished_at": timezone.now(),
        "error": error,
        "log_tail": "\n".join(recorder.lines),
        "eta_seconds": None if error else 0,
        "phase": "",
    }
    optional = {"step": step, "total_steps": total, "initial_metrics": initial, "final_metrics": final,
                "data_report": data, "device": device, "share_change": share_change}  # fmt: skip
    fields.update({name: value for name, value in optional.items() if value is not None})
    # Only a run still marked running is finished here: a reaper may have failed it meanwhile.
    job_rows.finish(TrainingRun, run.pk, **fields)
