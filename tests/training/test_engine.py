"""training.engine: agreement with TRL's DPOTrainer, learning, resume, stop, DDP, outputs, configuration."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.tiny_model import preference_rows
from tests.training.conftest import write_jsonl
from training.data import load_pairs
from training.dpo import pack_pairs, pair_logps
from training.engine import Callbacks, TrainConfig, load_model, sequence_logps, train

ROOT = Path(__file__).resolve().parents[2]


def _trl_trainer(config: TrainConfig, rows: list[dict], output_dir: Path, max_steps: int):
    """TRL's DPOTrainer set up as the engine is: same model, LoRA, seed, optimizer schedule and batch."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        max_steps=max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        beta=config.beta,
        loss_type=[config.loss_type, "sft"] if config.sft_weight else [config.loss_type],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
        max_length=config.max_length,
        seed=config.seed,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    return DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(config.base_model),
        peft_config=lora,
    )


@pytest.mark.parametrize("sft_weight", [0.0, 0.5])
def test_logps_and_first_losses_equal_trl(config: TrainConfig, tmp_path: Path, sft_weight: float) -> None:
    """Also with the chosen responses' NLL added (TRL's loss_type ["sigmoid", "sft"], RPO)."""
    rows = preference_rows(4, seed=11)
    # One batch holding every pair: the same batch on both sides.
    config = replace(config, batch_size=4, sft_weight=sft_weight)
    trainer = _trl_trainer(config, rows, tmp_path / "trl", max_steps=3)

    # Log-probs of one batch: TRL's reference forward (adapter off) against the engine's packed forward.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_ref_log_probs(trainer.model, batch)
    model, tokenizer = load_model(config)
    pairs, _ = load_pairs(
        write_jsonl(tmp_path / "pairs.jsonl", rows), tokenizer, max_length=1024, max_prompt_length=None
    )
    ours = sequence_logps(model, pairs, batch_size=4, pad_token_id=tokenizer.pad_token_id, reference=True)
    for mine, trl in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, trl.float(), rtol=1e-5, atol=1e-4)

    # Step losses: TRL's loss of each step, recorded as computed (its logs round to 4 decimals).
    trl_losses: list[float] = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(model, inputs, return_outputs, num_items_in_batch)
        trl_losses.append(loss.item())
        return loss

    trainer.compute_loss = recording
    trainer.train()
    result = train(
        replace(config, max_steps=3), train_file=tmp_path / "pairs.jsonl", output_dir=tmp_path / "ours"
    )
    history = json.loads((result.artifact_dir / "run_card.json").read_text())["history"]
    ours = [h["loss"] for h in history]  # the preference loss; TRL's loss adds the weighted NLL
    assert ours[0] == pytest.approx(0.693147, abs=1e-6)  # the adapter starts at zero: policy = reference
    assert ours[2] < ours[0] - 0.01  # and the steps moved it
    combined = [h["loss"] + sft_weight * h.get("nll_loss", 0.0) for h in history]
    assert ("nll_loss" in history[0]) == bool(sft_weight)
    assert combined == pytest.approx(trl_losses, rel=1e-4, abs=1e-5)


def test_fresh_adapter_policy_equals_reference_and_precomputed_equals_on_the_fly(
    config, preference_files
) -> None:
    model, tokenizer = load_model(replace(config, lora_target_modules=("q_proj", "v_proj")))
    pairs, _ = load_pairs(preference_files[0], tokenizer, max_length=1024, max_prompt_length=None)
    pairs = pairs[:12]
    kwargs = {"batch_size": 5, "pad_token_id": tokenizer.pad_token_id}
    reference = sequence_logps(model, pairs, reference=True, **kwargs)
    policy = sequence_logps(model, pairs, reference=False, **kwargs)
    assert torch.equal(reference[0], policy[0]) and torch.equal(reference[1], policy[1])
    # On the fly: the reference in the training layout (batches of 3 in file order), adapter disabled.
    with torch.no_grad(), model.disable_adapter():
        on_the_fly = [
            pair_logps(
                model,
                pack_pairs([(p.prompt, p.chosen, p.rejected) for p in pairs[i : i + 3]], pad_token_id=0),
            )
            for i in range(0, 12, 3)
        ]
    torch.testing.assert_close(torch.cat([c for c, _ in on_the_fly]), reference[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(torch.cat([r for _, r in on_the_fly]), reference[1], rtol=1e-5, atol=1e-4)
    # Once trained, the adapter changes the policy and not the reference.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    assert not torch.allclose(sequence_logps(model, pairs, reference=False, **kwargs)[0], reference[0])
    assert torch.equal(sequence_logps(model, pairs, reference=True, **kwargs)[0], reference[0])


def test_learning_a_synthetic_preference(config, preference_files, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    progress, evals = [], []
    callbacks = Callbacks(on_progress=progress.append, on_eval=lambda step, m: evals.append(step))
    config = replace(config, learning_rate=3e-3, max_steps=40, eval_steps=20, warmup_ratio=0.1)
    result = train(
        config,
        train_file=preference_files[0],
        eval_file=preference_files[1],
        output_dir=tmp_path,
        callbacks=callbacks,
    )
    assert result.status == "finished" and result.step == result.total_steps == 40 and evals == [0, 20, 40]
    start, end = result.initial_metrics, result.metrics
    assert start["rewards/accuracies"] == 0.0 and start["loss"] == pytest.approx(0.693147, abs=1e-6)
    assert end["rewards/accuracies"] >= 0.9 and end["rewards/margins"] > 0
    assert end["logps/preference_share"] >= max(0.9, start["logps/preference_share"] + 0.3)
    assert [p.step for p in progress] == list(range(1, 41)) and progress[-1].eta_seconds == 0
    assert all(p.tokens_per_second > 0 and p.total_steps == 40 for p in progress)
    assert progress[15].epoch == 1.0  # 64 pairs in batches of 4
    assert {"loss", "rewards/margins", "logps/preference_share", "learning_rate", "grad_norm"} <= progress[
        0
    ].metrics.keys()

    card = json.loads((tmp_path / "run_card.json").read_text())
    assert card["metrics"] == {"step_0": start, "final": end} and card["status"] == "finished"
    assert (
        card["data"]["train"]["sha256"] == result.data["train"]["sha256"]
        and card["hardware"]["device"] == "cpu"
    )
    assert "logps/preference_share" in (tmp_path / "run_card.md").read_text()
    # The saved adapter is the trained policy: merged into the base, it gives the final eval's log-probs.
    base = AutoModelForCausalLM.from_pretrained(config.base_model)
    merged = PeftModel.from_pretrained(base, tmp_path).merge_and_unload().eval()
    pairs, _ = load_pairs(preference_files[1], load_model(config)[1], max_length=1024, max_prompt_length=None)
    with torch.no_grad():
        chosen, _ = pair_logps(
            merged, pack_pairs([(p.prompt, p.chosen, p.rejected) for p in pairs], pad_token_id=0)
        )
    assert chosen.mean().item() == pytest.approx(end["logps/chosen"], abs=1e-3)


def test_stop_and_resume_reproduce_the_uninterrupted_run(config, preference_files, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    # 64 pairs, 2 micro-batches of 8 per step: 4 steps an epoch, so the run crosses an epoch boundary.
    config = replace(
        config, batch_size=8, gradient_accumulation_steps=2, max_steps=6, save_steps=2, warmup_ratio=0.2
    )
    files = {"train_file": preference_files[0], "eval_file": preference_files[1]}
    full = train(config, **files, output_dir=tmp_path / "full")

    done: list[int] = []
    callbacks = Callbacks(on_progress=lambda p: done.append(p.step), should_stop=lambda: len(done) >= 3)
    stopped = train(config, **files, output_dir=tmp_path / "part", callbacks=callbacks)
    assert stopped.status == "stopped" and stopped.step == 3 and done == [1, 2, 3] and stopped.metrics is None
    checkpoints = sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000003"]

    resumed = train(config, **files, output_dir=tmp_path / "part", resume=True)
    assert resumed.status == "finished" and resumed.step == 6
    history = [json.loads((tmp_path / d / "run_card.json").read_text())["history"] for d in ("full", "part")]
    assert [h["loss"] for h in history[1]] == [h["loss"] for h in history[0]]
    assert history[1] == history[0]
    assert resumed.metrics == full.metrics and resumed.initial_metrics == full.initial_metrics
    adapters = [load_file(tmp_path / d / "adapter_model.safetensors") for d in ("full", "part")]
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])

    with pytest.raises(ValueError, match="different beta"):
        train(replace(config, beta=0.2), **files, output_dir=tmp_path / "part", resume=True)
    lines: list[str] = []  # a resume with no checkpoint (a crash before the first) starts from step 0
    callbacks = Callbacks(on_log=lines.append)
    fresh = train(config, **files, output_dir=tmp_path / "new", resume=True, callbacks=callbacks)
    assert fresh.step == 6 and fresh.initial_metrics == full.initial_metrics
    assert "no checkpoint written yet: starting from step 0" in lines


@pytest.mark.parametrize(("loss_type", "label_smoothing"), [("ipo", 0.0), ("simpo", 0.1), ("robust", 0.2)])
def test_every_loss_type_trains(
    config, preference_files, tmp_path: Path, loss_type: str, label_smoothing: float
):
    config = replace(config, loss_type=loss_type, label_smoothing=label_smoothing, beta=2.0, max_steps=4)
    result = train(config, train_file=preference_files[0], output_dir=tmp_path)
    assert result.status == "finished" and all(torch.isfinite(torch.tensor(list(result.metrics.values()))))
    assert result.metrics["loss"] < result.initial_metrics["loss"]
    # SimPO is reference-free: no reference pass, no cache.
    assert (tmp_path / "reference_logps.safetensors").exists() == (loss_type != "simpo")


def test_over_long_prompt_is_reported_in_the_result_and_run_card(config, tmp_path: Path) -> None:
    rows = preference_rows(6, seed=12)
    rows[4]["prompt"][1]["content"] = "Question: " + "water paper window " * 80
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    result = train(
        replace(config, max_steps=1, max_length=96), train_file=train_file, output_dir=tmp_path / "out"
    )
    assert result.data["train"]["dropped"] == {"prompt_too_long": [rows[4]["id"]]}
    assert result.data["train"]["kept"] == 5
    card = json.loads((tmp_path / "out" / "run_card.json").read_text())
    assert card["data"]["train"]["dropped_counts"] == {"prompt_too_long": 1}
    markdown = (tmp_path / "out" / "run_card.md").read_text()
    assert (
        f"| train | dropped | `prompt_too_long` | 1 | the prompt alone fills max_length | `{rows[4]['id']}` |"
        in markdown
    )
    full = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert full["train"]["dropped"] == {"prompt_too_long": [rows[4]["id"]]}


def test_every_reason_reaches_the_log_card_and_callbacks(config, tmp_path: Path) -> None:
    rows = preference_rows(6, seed=13)
    rows[1]["rejected"] = rows[1]["chosen"]  # identical: dropped
    rows[2]["chosen"][0]["content"] += "<|im_end|>"  # EOS already written: not twice
    lines, reports = [], []
    result = train(
        replace(config, max_steps=2),
        train_file=write_jsonl(tmp_path / "train.jsonl", rows),
        output_dir=tmp_path / "out",
        callbacks=Callbacks(on_log=lines.append, on_data=reports.append),
    )
    log = "\n".join(lines)
    assert "train: 5 of 6 pairs kept, 1 dropped" in log
    assert "dropped 1 identical_after_template" in log and rows[1]["id"] in log
    assert "changed 1 already_templated" in log and rows[2]["id"] in log
    assert reports == [result.data] and result.data["train"]["changed"] == {
        "already_templated": [rows[2]["id"]]
    }
    markdown = (tmp_path / "out" / "run_card.md").read_text()
    assert "`identical_after_template`" in markdown and "`already_templated`" in markdown
    assert "held-out preference share" in log and result.share_change["pairs"] == 5
    assert "## Before and after" in markdown and result.share_change["words"] in markdown


def test_a_row_the_template_refuses_stops_the_run_before_training(config, tmp_path: Path) -> None:
    import shutil

    from tests.tiny_model import NO_SYSTEM_TEMPLATE, tokenizer_variant

    model = tmp_path / "gemma-like"
    shutil.copytree(config.base_model, model)
    tokenizer_variant(Path(config.base_model), model, chat_template=NO_SYSTEM_TEMPLATE)
    train_file = write_jsonl(tmp_path / "train.jsonl", preference_rows(4, seed=14))  # with system turns
    with pytest.raises(ValueError, match=r"train.jsonl row 1 \(id s14-0\).*System role not supported"):
        train(
            replace(config, base_model=str(model), max_steps=1),
            train_file=train_file,
            output_dir=tmp_path / "o",
        )
    assert not (tmp_path / "o" / "reference_logps.safetensors").exists()  # nothing was computed
    merged = train(replace(config, base_model=str(model), max_steps=1, system_turn="merge"),
                   train_file=train_file, output_dir=tmp_path / "m")  # fmt: skip
    assert merged.status == "finished" and merged.data["train"]["changed_counts"] == {"system_merged": 4}


def test_two_process_ddp_equals_one_process_with_the_combined_batch(
    config, preference_files, tmp_path: Path
) -> None:
    config = replace(config, batch_size=2, max_steps=3)
    spec = {**config.to_dict(), "train_file": str(preference_files[0]), "output_dir": str(tmp_path / "ddp")}
    spec_file = tmp_path / "config.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "training.engine", str(spec_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = json.loads((tmp_path / "ddp" / "run_card.json").read_text())
    assert two["hardware"]["processes"] == 2

    one = train(replace(config, batch_size=4), train_file=preference_files[0], output_dir=tmp_path / "one")
    history = json.loads((one.artifact_dir / "run_card.json").read_text())["history"]
    for name in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
        assert [h[name] for h in two["history"]] == pytest.approx(
            [h[name] for h in history], rel=1e-4, abs=1e-6
        )
    assert two["metrics"]["final"] == pytest.approx(one.metrics, rel=1e-4, abs=1e-6)


def test_config_round_trips_through_json_and_refuses_unknown_keys(tiny_model_dir: Path) -> None:
    config = TrainConfig(
        base_model=str(tiny_model_dir), loss_type="ipo", lora_target_modules=("q_proj", "v_proj")
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="Unknown TrainConfig key.*learning_rte, lora_rank"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rte": 1e-4, "lora_rank": 8})
    for bad in (
        {"loss_type": "kto"},
        {"beta": 0},
        {"label_smoothing": 0.1, "loss_type": "ipo"},
        {"max_prompt_length": 2048},
    ):
        with pytest.raises(ValueError, match="Invalid TrainConfig"):
            TrainConfig(base_model="m", **bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.beta = 0.5  # type: ignore[misc]


def test_engine_modules_do_not_import_django() -> None:
    code = (
        "import sys, training.dpo, training.data, training.engine, training.demo_model; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_phases_say_what_the_run_does_between_steps(config, preference_files, tmp_path: Path) -> None:
    phases: list[tuple[str, int, int]] = []
    result = train(
        replace(config, max_steps=2, eval_batch_size=8),
        train_file=preference_files[0],
        eval_file=preference_files[1],
        output_dir=tmp_path,
        callbacks=Callbacks(on_phase=lambda *p: phases.append(p)),
    )
    names = [name for name, _, _ in phases]
    assert names[0] == "loading" and "saving" in names and result.status == "finished"
    reference = [(done, total) for name, done, total in phases if name == "reference:train"]
    assert reference == [(8 * k, 64) for k in range(1, 9)]  # its own progress, batch by batch
    assert [(d, t) for n, d, t in phases if n == "reference:eval"][-1] == (16, 16)
    assert names.index("reference:eval") < names.index("training") < names.index("evaluating")


def test_the_run_card_names_the_model_and_roots_its_paths(config, preference_files, tmp_path: Path) -> None:
    from training.engine import Display

    storage = preference_files[0].parent.parent  # the folder the preference files live under
    lines: list[str] = []
    train(
        replace(config, max_steps=1),
        train_file=preference_files[0],
        output_dir=tmp_path / "runs" / "7",
        callbacks=Callbacks(on_log=lines.append),
        display=Display(model="tiny", model_source="var/models/tiny", roots=(tmp_path, storage)),
    )
    card = json.loads((tmp_path / "runs" / "7" / "run_card.json").read_text())
    assert card["base_model"] == card["config"]["base_model"] == "tiny"
    assert card["base_model_source"] == "var/models/tiny"
    assert card["data"]["train"]["file"] == f"{preference_files[0].parent.name}/train.jsonl"
    text = "\n".join(lines) + (tmp_path / "runs" / "7" / "run_card.md").read_text()
    assert str(tmp_path) not in text and str(storage) not in text and config.base_model not in text
    assert "adapter and run card in runs/7" in text and "Preference tuning (sigmoid) of tiny" in text
