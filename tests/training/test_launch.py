"""training.launch: the engine in two processes under torchrun, as a child process, behaving like train()."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from tests.tiny_model import preference_rows
from tests.training.conftest import write_jsonl
from training import launch as launch_module
from training.engine import Callbacks, Display, Progress, TrainConfig, train
from training.launch import LaunchError, launch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(config: TrainConfig) -> TrainConfig:
    """The engine tests' configuration (tests/training/conftest.py) with 2 pairs a process per micro-step."""
    return replace(config, batch_size=2)


def _launched() -> list[psutil.Process]:
    """torchrun's agent, a child of this process, and its ranks."""
    (agent,) = [p for p in psutil.Process().children() if "training.launch" in p.cmdline()]
    return [agent, *agent.children()]


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_two_launched_processes_equal_one_process_with_the_combined_batch(
    config, preference_files, tmp_path: Path
) -> None:
    config = replace(config, max_steps=3)
    progress: list[Progress] = []
    evals, lines, phases, reports, outputs = [], [], [], [], []
    two = launch(
        config,
        train_file=preference_files[0],
        eval_file=preference_files[1],
        output_dir=tmp_path / "two",
        callbacks=Callbacks(
            on_progress=progress.append,
            on_eval=lambda step, metrics: evals.append((step, metrics)),
            on_log=lines.append,
            on_phase=lambda *phase: phases.append(phase),
            on_data=reports.append,
            on_outputs=outputs.append,
        ),
        display=Display(model="tiny", roots=(tmp_path,)),
        processes=2,
        poll_seconds=0.2,
    )
    alone: list[Progress] = []
    one = train(
        replace(config, batch_size=4),
        train_file=preference_files[0],
        eval_file=preference_files[1],
        output_dir=tmp_path / "one",
        callbacks=Callbacks(on_progress=alone.append),
    )
    assert [p.step for p in progress] == [1, 2, 3] and progress[-1].total_steps == 3
    for name in ("loss", "rewards/margins", "grad_norm"):
        assert [p.metrics[name] for p in progress] == pytest.approx(
            [p.metrics[name] for p in alone], rel=1e-4, abs=1e-6
        )
    assert (
        (two.status, two.step, two.total_steps)
        == (one.status, one.step, one.total_steps)
        == ("finished", 3, 3)
    )
    assert two.metrics == pytest.approx(one.metrics, rel=1e-4, abs=1e-6)
    assert two.artifact_dir == tmp_path / "two" and two.data == one.data and two.device == "cpu"
    assert [step for step, _ in evals] == [0, 3] and evals[-1][1] == two.metrics
    assert reports == [two.data] and outputs == [tmp_path / "two"]
    assert phases[0] == ("loading", 0, 0) and ("training", 0, 3) in phases and phases[-1] == ("saving", 0, 0)
    assert "Preference tuning (sigmoid) of tiny, device cpu, 2 process(es)" in lines
    assert "finished after step 3; adapter and run card in two" in lines
    assert not [line for line in lines if "Warning" in line or "Traceback" in line or "%|" in line]
    card = json.loads((tmp_path / "two" / "run_card.json").read_text())
    assert card["hardware"]["processes"] == 2 and card["base_model"] == "tiny"


def test_a_stop_ends_both_ranks_after_a_checkpoint(config, preference_files, tmp_path: Path) -> None:
    steps, checkpoints, tree = [], [], []

    def progress(p: Progress) -> None:
        steps.append(p.step)
        if not tree:
            tree.extend(_launched())

    result = launch(
        replace(config, max_steps=400),
        train_file=preference_files[0],
        eval_file=None,
        output_dir=tmp_path,
        callbacks=Callbacks(
            on_progress=progress, should_stop=lambda: bool(steps), on_checkpoint=checkpoints.append
        ),
        processes=2,
        poll_seconds=0.1,
    )
    assert result.status == "stopped" and 1 <= result.step == steps[-1] < 400 and result.metrics is None
    assert checkpoints == [tmp_path / "checkpoints" / f"step-{result.step:06d}"]
    assert (checkpoints[0] / "state.json").exists() and (tmp_path / "adapter_model.safetensors").exists()
    assert len(tree) == 3 and not _alive(tree)  # torchrun's agent and both ranks have ended


def test_a_rank_killed_with_sigkill_fails_the_launch_within_a_minute(
    config, preference_files, tmp_path: Path
) -> None:
    killed: dict = {}

    def progress(p: Progress) -> None:
        if not killed:
            tree = _launched()
            (rank,) = [p for p in tree[1:] if p.environ().get("RANK") == "1"]
            killed.update(tree=tree, pid=rank.pid, at=time.monotonic())
            rank.send_signal(signal.SIGKILL)

    with pytest.raises(LaunchError) as failed:
        launch(
            replace(config, max_steps=400),
            train_file=preference_files[0],
            eval_file=None,
            output_dir=tmp_path,
            callbacks=Callbacks(on_progress=progress),
            processes=2,
            poll_seconds=0.1,
        )
    assert time.monotonic() - killed["at"] < 60
    assert str(failed.value).startswith(f"rank 1 (pid {killed['pid']}) was killed by SIGKILL")
    assert (failed.value.rank, failed.value.signal, failed.value.exitcode) == (1, "SIGKILL", -9)
    assert len(killed["tree"]) == 3 and not _alive(killed["tree"])


def test_a_run_that_does_not_stop_in_time_is_ended(config, tmp_path: Path, monkeypatch) -> None:
    """A stop takes effect between steps; a run that cannot get there is ended after the grace period. Here
    both ranks wait for ever to open their training file, a pipe nobody writes to."""
    monkeypatch.setattr(launch_module, "STOP_GRACE_SECONDS", 1.0)
    stuck = tmp_path / "train.jsonl"
    os.mkfifo(stuck)
    tree: list[psutil.Process] = []

    def should_stop() -> bool:
        if not tree and len(processes := _launched()) == 3:
            tree.extend(processes)
        return bool(tree)

    with pytest.raises(LaunchError, match=r"^the run did not stop within 1 s of the stop request") as failed:
        launch(config, train_file=stuck, eval_file=None, output_dir=tmp_path / "o",
               callbacks=Callbacks(should_stop=should_stop), processes=2, poll_seconds=0.1)  # fmt: skip
    assert failed.value.stop_requested and not _alive(tree)


def test_bad_input_fails_the_launch_with_the_engines_own_error(config, tmp_path: Path) -> None:
    rows = preference_rows(4, seed=3)
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ValueError) as alone:
        train(config, train_file=bad, output_dir=tmp_path / "one")
    with pytest.raises(LaunchError) as launched:
        launch(config, train_file=bad, eval_file=None, output_dir=tmp_path / "two", processes=2)
    error = f"ValueError: {alone.value}"
    assert re.fullmatch(r"ranks? (0|1|0 and 1) failed: " + re.escape(error), str(launched.value))
    assert launched.value.error == error and "Traceback" in launched.value.traceback

    missing = write_jsonl(tmp_path / "eval.jsonl", rows)
    with pytest.raises(LaunchError, match=r"^rank 0 failed: FileNotFoundError: .*nothing\.jsonl"):
        launch(config, train_file=tmp_path / "nothing.jsonl", eval_file=missing, output_dir=tmp_path / "o",
               processes=1)  # fmt: skip


def test_the_launcher_does_not_import_django() -> None:
    code = "import sys, training.launch; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
