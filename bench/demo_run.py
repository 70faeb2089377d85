"""Benchmark: a newcomer's first training run on the demo, as `make run` sets it up, and whether it learns.

In this process, on a scratch SQLite database and scratch media and artifact folders (the developer's data is
never touched):
1. `migrate` and `seed_demo`: the demo users, pairs, simulated judgments and the demo snapshot, as `make run`
   does;
2. a run with the New run form's initial values (`training.forms.RunForm`) on the demo snapshot and the demo
   model, created through `services.run_create` (the data check included) and executed by
   `training.runner.execute`, as the worker does. Its wall time is the run's time. Target: at most 5 minutes
   on 2 CPU cores;
3. the held-out preference share at step 0 and at the end, with the 95% interval of the change the run page
   shows. Target: a rise of at least 0.3 with an interval that excludes zero;
4. the base and the tuned model's greedy answers to the eval split's prompts (at most `--answers`, up to
   MAX_NEW_TOKENS new tokens): their mean length, the share that end before the cap, and two examples.

Needs the demo model (`python manage.py prepare_demo_model`) and Redis (the seed's shared cache and the job
queue). Run: `.venv/bin/python bench/demo_run.py [--answers 40] [--out PATH]`. Writes JSON to
var/bench/demo_run.json and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MINUTES_TARGET, CHANGE_TARGET = 5.0, 0.3
MAX_NEW_TOKENS = 96
MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"


def greedy_answers(model_dir: Path, adapter_dir: Path, prompts: list[list[dict]]) -> dict[str, list]:
    """The base model's and the tuned model's greedy answers to `prompts`: `{"base": [(text, new tokens,
    ended), ...], "tuned": [...]}`; one model in memory, the adapter switched off for the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tokenizer.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    answers: dict[str, list] = {"base": [], "tuned": []}
    for name in answers:
        for start in range(0, len(texts), 16):
            encoded = tokenizer(
                texts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False
            )
            with (
                torch.inference_mode(),
                model.disable_adapter() if name == "base" else contextlib.nullcontext(),
            ):
                output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            for ids in output[:, encoded["input_ids"].shape[1] :].tolist():
                end = ids.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in ids else None
                used = ids[:end] if end is not None else ids
                answers[name].append(
                    (tokenizer.decode(used, skip_special_tokens=True).strip(), len(used), end is not None)
                )
    return answers


def summary(answers: list[tuple[str, int, bool]]) -> dict[str, float]:
    return {
        "mean_new_tokens": round(statistics.mean(n for _, n, _ in answers), 1),
        "ended_before_cap": round(sum(ended for _, _, ended in answers) / len(answers), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=40, help="eval prompts answered before and after")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "demo_run.json")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="change a form default for this run (JSON values), e.g. --set beta=0.05; to compare settings",
    )  # fmt: skip
    args = parser.parse_args()
    if not MODEL.is_dir():
        sys.exit(f"{MODEL} is missing: run `python manage.py prepare_demo_model` first.")
    scratch = Path(tempfile.mkdtemp(prefix="prefstudio-demo-run-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{scratch / 'demo.sqlite3'}",
        MEDIA_ROOT=str(scratch / "media"),
        ARTIFACT_ROOT=str(scratch / "artifacts"),
        PREFSTUDIO_TRAINING_QUEUE="bench-demo-run",  # no worker listens: the run executes here
        DJANGO_SETTINGS_MODULE="prefstudio.settings",
    )
    import django

    django.setup()
    import django_rq
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from labeling.models import ExportSnapshot
    from training import runner, services
    from training.forms import RunForm
    from training.models import TrainingRun

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("seed_demo", "--allow-production", stdout=open(os.devnull, "w"))  # noqa: SIM115
    seed_seconds = time.perf_counter() - started
    snapshot = ExportSnapshot.objects.get(project__slug="demo")
    form = RunForm(snapshots=ExportSnapshot.objects.all())
    config = {
        name: field.initial for name, field in form.fields.items() if name not in ("snapshot", "base_model")
    }
    config["label_smoothing"] = snapshot.suggested_label_smoothing or 0.0  # the form pre-fills it
    for change in args.set:
        name, _, value = change.partition("=")
        config[name] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    base_model = next(iter(services.base_models()))
    form = RunForm({**config, "snapshot": snapshot.uuid, "base_model": base_model},
                   snapshots=ExportSnapshot.objects.all())  # fmt: skip
    assert form.is_valid(), form.errors
    run = services.run_create(snapshot=snapshot, user=get_user_model().objects.get(username="admin"),
                              base_model=base_model, config=form.config(base_model=base_model))  # fmt: skip
    django_rq.get_queue("bench-demo-run").empty()
    started = time.perf_counter()
    outcome = runner.execute(run.pk, worker="bench")
    run_seconds = time.perf_counter() - started
    run = TrainingRun.objects.get(pk=run.pk)
    if outcome != "succeeded":
        sys.exit(f"The demo run {outcome}: {run.error}\n{run.log_tail}")
    change = run.outcome
    _, eval_file = services.split_files(snapshot)
    rows = [json.loads(line) for line in eval_file.open()][: args.answers]
    answers = greedy_answers(MODEL, services.artifact_dir(run), [r["prompt"] for r in rows])
    examples = [
        {"prompt": r["prompt"][-1]["content"], "chosen": r["chosen"][-1]["content"],
         "before": answers["base"][i][0], "after": answers["tuned"][i][0]}
        for i, r in enumerate(rows) if r["id"].startswith("concise-")
    ][:2]  # fmt: skip
    result = {
        "benchmark": "demo_run",
        "changed_defaults": args.set,
        "snapshot": {"train": snapshot.train_rows, "eval": snapshot.eval_rows},
        "config": {k: v for k, v in run.config.items() if k != "base_model"},
        "seed_seconds": round(seed_seconds, 1),
        "run_minutes": round(run_seconds / 60, 2),
        "run_minutes_target": MINUTES_TARGET,
        "final_metrics": {k: run.final_metrics.get(k) for k in ("rewards/accuracies", "loss", "nll_loss")},
        "share": change.to_dict(),
        "share_target": CHANGE_TARGET,
        "pass": run_seconds / 60 <= MINUTES_TARGET and change.change >= CHANGE_TARGET and change.low > 0,
        "answers": {
            "prompts": len(rows),
            "base": summary(answers["base"]),
            "tuned": summary(answers["tuned"]),
        },
        "examples": examples,
        "data": {
            split: {"kept": r["kept"], "dropped": r["dropped_counts"], "changed": r["changed_counts"]}
            for split, r in run.data_report.items()
        },  # fmt: skip
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": run.device},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"demo run: {result['run_minutes']} min (target {MINUTES_TARGET:.0f}); {change.words()} "
          f"{'PASS' if result['pass'] else 'FAIL'}")  # fmt: skip
    print(f"greedy answers to {len(rows)} eval prompts: base {result['answers']['base']}, "
          f"tuned {result['answers']['tuned']}")  # fmt: skip
    for example in examples:
        print(f"\nQ: {example['prompt']}\nbefore: {example['before']}\nafter:  {example['after']}")


if __name__ == "__main__":
    main()
