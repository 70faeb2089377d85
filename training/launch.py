"""The training engine in N processes under torchrun, as a child process, behaving like `train`. No Django
import.

    from training.launch import LaunchError, launch

    result = launch(config, train_file=..., eval_file=..., output_dir=..., callbacks=Callbacks(...),
                    resume=False, display=Display(...), processes=2)   # a TrainResult, as train() gives

The child is torchrun's own launcher (`torch.distributed.run`, called as accelerate calls it) in a small
wrapper, `python -m training.launch CALLER FAILURES TORCHRUN-ARGUMENTS`, which writes every failed rank to
FAILURES as JSON where torchrun would only print a summary for people. It runs `python -m training.engine SPEC
--events EVENTS --stop-file STOP` in `processes` processes (`--standalone`: one machine, a free port). Rank 0
appends each callback to EVENTS as a JSON line; `launch` reads them every `poll_seconds` and calls the
matching callback in the caller's thread. A stop asked by `should_stop` creates STOP: the engine checkpoints
and ends on every rank before its next step, and the result says "stopped".

The child's processes end with the caller: torchrun gets SIGTERM when the caller dies (Linux: the kernel's
parent-death signal), and ends its workers; a worker gets SIGKILL when torchrun dies. An exception in `launch`
(KeyboardInterrupt too) ends the whole tree before it propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from training.config import TrainConfig
from training.engine import Callbacks, Display, Progress, TrainResult, end_with_parent

ROOT = Path(__file__).resolve().parents[1]  # holds the `training` package: the child's PYTHONPATH
STOP_GRACE_SECONDS = 120.0  # after a stop request, the run is killed if it has not ended by then
TERMINATE_SECONDS = 15.0  # torchrun's time to end its workers after SIGTERM, before everything gets SIGKILL
OUTPUT_LINES = 50  # the last lines of the child's output kept for a LaunchError

_RANK_PREFIX = re.compile(r"\[rank\d+\]: ?")  # torch.distributed's excepthook marks each traceback line so
_AGENT_RECORD = re.compile(r"[DIWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")  # torchrun's own logging
_PYTHON_WARNING = re.compile(r"\S.*:\d+: \w*Warning: ")
_PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|")  # tqdm's, as transformers draws while loading weights
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


class LaunchError(RuntimeError):
    """A launched run that failed: its message is one line for people, such as "rank 1 (pid 1234) was
    killed by SIGKILL (out of memory, or killed from outside)" or "rank 0 failed: ValueError: ...".

    `rank`, `pid`, `exitcode` (negative: the signal's number) and `signal` ("SIGKILL") describe the process
    that failed first, where torchrun told; `error` is its uncaught exception as "Type: message" and
    `traceback` the exception's traceback, where it had one; `output` the last lines torchrun and its
    workers wrote; `stop_requested` whether a stop had been asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        pid: int | None = None,
        exitcode: int | None = None,
        signal: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        output: tuple[str, ...] = (),
        stop_requested: bool = False,
    ) -> None:
        super().__init__(message)
        self.rank, self.pid, self.exitcode, self.signal = rank, pid, exitcode, signal
        self.error, self.traceback, self.output = error, traceback, output
        self.stop_requested = stop_requested


def launch(
    config: TrainConfig,
    *,
    train_file: Path,
    eval_file: Path | None,
    output_dir: Path,
    callbacks: Callbacks | None = None,
    resume: bool = False,
    display: Display | None = None,
    processes: int,
    poll_seconds: float = 0.5,
    env: dict[str, str] | None = None,
) -> TrainResult:
    """`training.engine.train` in `processes` data-parallel processes (DDP: `config.batch_size` pairs per
    process per micro-step), run by torchrun as a child process; blocks until the run ends.

    Paths are as `train` takes them, relative ones to the current directory (the child's too). The callbacks
    run in the calling thread, from the events the child's rank 0 writes; `should_stop` is asked every
    `poll_seconds` seconds, and a run that has not ended `STOP_GRACE_SECONDS` after it said yes is killed.
    `env` adds to (or overrides) this process's environment for the child, e.g. `CUDA_VISIBLE_DEVICES`;
    `OMP_NUM_THREADS` defaults to this machine's CPUs divided by `processes`.

    Returns the `TrainResult` of rank 0 (its `device` and `timings` are that process's). Raises `ValueError`
    for `processes` < 1, and `LaunchError` when the child fails: a rank's exception (the engine's own
    errors, such as a malformed preference file, included), a rank killed by a signal, torchrun failing, or
    a stop that did not end the run in time.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}.")
    callbacks = callbacks or Callbacks()
    with tempfile.TemporaryDirectory(prefix="prefstudio-launch-") as folder:
        work = Path(folder)
        spec, events, stop, failures = (
            work / name for name in ("spec.json", "events.jsonl", "stop", "failed.json")
        )
        spec.write_text(json.dumps(_spec(config, train_file, eval_file, output_dir, display)))
        events.touch()
        command = [sys.executable, "-m", "training.launch", str(os.getpid()), str(failures), "--standalone",
                   "--nproc-per-node", str(processes), "--log-dir", str(work / "torchrun"),
                   "-m", "training.engine", str(spec), "--events", str(events), "--stop-file", str(stop),
                   *(["--resume"] if resume else [])]  # fmt: skip
        child = subprocess.Popen(
            command,
            env=_environment(env, processes),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the caller's terminal reaches the caller only
        )
        try:
            return _supervise(child, callbacks, events, stop, failures, poll_seconds)
        except BaseException:
            _terminate(child)
            raise
        finally:
            if child.stdout:
                child.stdout.close()


def _spec(
    config: TrainConfig, train_file: Path, eval_file: Path | None, output_dir: Path, display: Display | None
) -> dict[str, Any]:
    """The engine's command-line JSON (`training.engine.main`)."""
    spec = {**config.to_dict(), "train_file": str(train_file), "output_dir": str(output_dir)}
    if eval_file:
        spec["eval_file"] = str(eval_file)
    if display:
        spec["display"] = {"model": display.model, "model_source": display.model_source,
                           "roots": [str(root) for root in display.roots]}  # fmt: skip
    return spec


def _environment(extra: dict[str, str] | None, processes: int) -> dict[str, str]:
    environment = {**os.environ, **(extra or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), environment.get("PYTHONPATH"))))
    environment["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are written, and none is lost to a kill
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    environment.setdefault("OMP_NUM_THREADS", str(max(1, cpus // processes)))  # torchrun would say 1
    return environment


def _supervise(
    child: subprocess.Popen,
    callbacks: Callbacks,
    events: Path,
    stop: Path,
    failures: Path,
    poll_seconds: float,
) -> TrainResult:
    output: queue.SimpleQueue[str] = queue.SimpleQueue()
    reader = threading.Thread(target=_read_lines, args=(child.stdout, output), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=OUTPUT_LINES)
    useful, keep = deque(maxlen=OUTPUT_LINES), _OutputFilter()
    outcome: dict[str, Any] | None = None  # the result event
    stop_asked: float | None = None
    with events.open("rb") as stream:
        lines = _JsonLines(stream)
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=poll_seconds)
            if child.returncode is not None:
                reader.join(timeout=5)  # the rest of the output: the pipe closes with the last process
            for event in lines.read():
                if event.get("event") == "result":
                    outcome = event
                else:
                    _dispatch(event, callbacks)
            while not output.empty():
                line = output.get()
                tail.append(line)
                if keep(line):
                    useful.append(line)
                    if callbacks.on_log:
                        callbacks.on_log(line)
            if child.returncode is not None:
                break
            if stop_asked is None:
                if callbacks.should_stop and callbacks.should_stop():
                    stop.touch()
                    stop_asked = time.monotonic()
            elif time.monotonic() - stop_asked > STOP_GRACE_SECONDS:
                _terminate(child)
                raise LaunchError(
                    f"the run did not stop within {STOP_GRACE_SECONDS:.0f} s of the stop request, so its "
                    "processes were killed",
                    output=tuple(tail),
                    stop_requested=True,
                )
    if child.returncode == 0 and outcome:
        result = {f.name: outcome[f.name] for f in dataclasses.fields(TrainResult) if f.name in outcome}
        return TrainResult(**{**result, "artifact_dir": Path(result["artifact_dir"])})
    raise _failure(child, failures, tuple(tail), tuple(useful), stop_asked is not None)


def _read_lines(stream: IO[bytes], lines: queue.SimpleQueue[str]) -> None:
    with contextlib.suppress(OSError, ValueError):  # the pipe closed under it: the launch has ended
        for raw in stream:
            for line in raw.decode(errors="replace").splitlines():  # progress bars end lines with \r
                lines.put(line)


class _JsonLines:
    """The complete JSON lines appended to a file since the last read."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.partial = stream, b""

    def read(self) -> list[dict[str, Any]]:
        chunks = (self.partial + self.stream.read()).split(b"\n")
        self.partial = chunks.pop()
        return [json.loads(chunk) for chunk in chunks if chunk.strip()]


def _dispatch(event: dict[str, Any], callbacks: Callbacks) -> None:
    """Call the callback that wrote `event` in the child (training.engine.main --events) with its values."""
    kind = event.get("event")
    if kind == "progress" and callbacks.on_progress:
        callbacks.on_progress(Progress(**{f.name: event[f.name] for f in dataclasses.fields(Progress)}))
    elif kind == "eval" and callbacks.on_eval:
        callbacks.on_eval(event["step"], event["metrics"])
    elif kind == "log" and callbacks.on_log:
        callbacks.on_log(event["line"])
    elif kind == "data" and callbacks.on_data:
        callbacks.on_data(event["report"])
    elif kind == "phase" and callbacks.on_phase:
        callbacks.on_phase(event["name"], event["done"], event["total"])
    elif kind == "checkpoint" and callbacks.on_checkpoint:
        callbacks.on_checkpoint(Path(event["path"]))
    elif kind == "outputs" and callbacks.on_outputs:
        callbacks.on_outputs(Path(event["path"]))


class _OutputFilter:
    """Whether a line of torchrun's and its workers' output belongs in the run's log. Not: blank lines and
    banners, torchrun's own log records, progress bars, Python warnings with their source line, and
    tracebacks (the failed rank's is in the LaunchError). Each line of a rank's traceback carries its
    "[rankN]: " prefix, so two ranks' tracebacks may interleave."""

    def __init__(self) -> None:
        self.inside: dict[str, str] = {}  # prefix -> "traceback" or "warning"

    def __call__(self, line: str) -> bool:
        match = _RANK_PREFIX.match(line)
        prefix = match.group(0) if match else ""
        text = line[len(prefix) :]
        inside = self.inside.pop(prefix, None)
        if inside and text[:1] in (" ", "\t"):
            if inside == "traceback":
                self.inside[prefix] = inside
            return False
        if inside == "traceback" and not text.strip():
            self.inside[prefix] = inside
            return False
        if text.startswith("Traceback (most recent call last):"):
            self.inside[prefix] = "traceback"
            return False
        if _PYTHON_WARNING.match(text):
            self.inside[prefix] = "warning"
            return False
        # The exception's own line ends a traceback.
        noise = inside == "traceback" or not text.strip() or set(text.strip()) == {"*"}
        return not (
            noise or _AGENT_RECORD.match(text) or _PROGRESS_BAR.search(text) or text.startswith(_CHAINED)
        )


def _failure(
    child: subprocess.Popen, failures: Path, tail: tuple[str, ...], useful: tuple[str, ...], stopping: bool
) -> LaunchError:
    """The LaunchError of a child that ended with `child.returncode`: the rank that failed first, from the
    wrapper's report, else torchrun's exit and its last words."""
    last = useful[-1] if useful else ""
    if child.returncode == 0:
        return LaunchError("the engine ended without a result", output=tail, stop_requested=stopping)
    if not failures.exists():
        code = child.returncode
        said = f"torchrun (pid {child.pid}) " + (
            f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        )
        return LaunchError(said + (f": {last}" if last else ""), pid=child.pid, exitcode=code,
                           signal=_signal_name(-code) if code < 0 else None, output=tail,
                           stop_requested=stopping)  # fmt: skip
    failed = json.loads(failures.read_text())

    def order(failure: dict[str, Any]) -> tuple[int, float, int]:
        # A rank killed by a signal other than SIGTERM was killed from outside: nothing else explains it.
        # SIGTERM is what torchrun sends the ranks left once one has failed.
        name = failure["signal"]
        return (0 if name and name != "SIGTERM" else 2 if name else 1), failure["time"], failure["rank"]

    first = min(failed, key=order)
    if first["error"]:
        ranks = sorted(f["rank"] for f in failed if f["error"] == first["error"])
        who = (
            f"rank {ranks[0]}"
            if len(ranks) == 1
            else f"ranks {', '.join(map(str, ranks[:-1]))} and {ranks[-1]}"
        )
        message = f"{who} failed: " + " ".join(line.strip() for line in first["error"].splitlines())
    elif first["signal"]:
        message = f"rank {first['rank']} (pid {first['pid']}) was killed by {first['signal']}"
        if first["signal"] == "SIGKILL":
            message += " (out of memory, or killed from outside)"
    else:
        message = f"rank {first['rank']} (pid {first['pid']}) exited with status {first['exitcode']}"
        message += f": {last}" if last else ""
    return LaunchError(message, rank=first["rank"], pid=first["pid"], exitcode=first["exitcode"],
                       signal=first["signal"], error=first["error"], traceback=first["traceback"],
                       output=tail, stop_requested=stopping)  # fmt: skip


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _terminate(child: subprocess.Popen) -> None:
    """End the child and every process below it: SIGTERM to torchrun, which ends its workers; SIGKILL to
    whatever is left after TERMINATE_SECONDS."""
    below = _descendants(child.pid)
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(TERMINATE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for pid, started in below:
        if _process_stat(pid)[1:] == (started,):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _process_stat(pid: int) -> tuple[int, ...]:
    """`(parent pid, start time in clock ticks)` from /proc (Linux); `()` for a process that has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ()
    return int(fields[1]), int(fields[19])


def _descendants(pid: int) -> list[tuple[int, int]]:
    """`(pid, start time)` of every process below `pid`, so that a reused pid is not taken for one of them."""
    children: dict[int, list[tuple[int, int]]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (stat := _process_stat(int(entry.name))):
                children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found, todo = [], [pid]
    while todo:
        for process in children.get(todo.pop(), []):
            found.append(process)
            todo.append(process[0])
    return found


def _report(rank: int, failure: Any) -> dict[str, Any]:
    """One failed rank of torchrun's ChildFailedError as JSON."""
    data = failure.error_file_data.get("message") if os.path.isfile(failure.error_file) else None
    error, trace = (
        (data.get("message"), data.get("extraInfo", {}).get("py_callstack"))
        if isinstance(data, dict)
        else (data, None)
    )
    # The error file's time (sub-second) orders two ranks' exceptions; torchrun's timestamps are seconds.
    written = os.path.getmtime(failure.error_file) if data else float(failure.timestamp)
    name = failure.signal_name() if failure.exitcode < 0 else None
    return {"rank": rank, "local_rank": failure.local_rank, "pid": failure.pid, "exitcode": failure.exitcode,
            "signal": name, "error": error, "traceback": trace, "time": written}  # fmt: skip


def _agent(argv: list[str]) -> int:
    """`python -m training.launch CALLER FAILURES TORCHRUN-ARGUMENTS...`: torchrun, which writes its failed
    ranks to FAILURES as a JSON list (rank, local_rank, pid, exitcode, signal, error, traceback, time) where
    it would raise ChildFailedError, and exits 1 then. It gets SIGTERM, on which it ends its workers, when
    the process CALLER (a pid, its parent) dies."""
    end_with_parent(signal.SIGTERM, parent=int(argv[0]))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv[2:]))
    except ChildFailedError as failed:
        Path(argv[1]).write_text(json.dumps([_report(rank, f) for rank, f in failed.failures.items()]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_agent(sys.argv[1:]))
