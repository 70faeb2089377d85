"""The DPO training engine: a base model plus a LoRA adapter, tuned on a preference file. No Django import.

From Python (the web app's worker calls exactly this)::

    from training.engine import Callbacks, TrainConfig, train

    result = train(
        TrainConfig(base_model="var/models/smollm2-135m-instruct", loss_type="sigmoid", beta=0.1),
        train_file=Path("train.jsonl"),        # TRL preference columns, JSONL or Parquet (training.data)
        eval_file=Path("eval.jsonl"),          # optional; without it, evaluation runs on the training pairs
        output_dir=Path("var/artifacts/run-7"),
        callbacks=Callbacks(on_progress=..., on_eval=..., on_log=..., should_stop=...),
        resume=False,                          # True: continue after the latest checkpoint in output_dir
    )                                          #       (from step 0 when there is none)
    result.status, result.step, result.metrics, result.initial_metrics, result.data, result.device

`Callbacks.on_progress(Progress)` follows every optimizer step (step, total_steps, epoch, tokens_per_second,
eta_seconds, the step's metrics); `on_eval(step, metrics)` every evaluation; `on_log(line)` every log line;
`should_stop()` is asked before every step; `on_checkpoint(folder)` follows each complete checkpoint and
`on_outputs(output_dir)` the written adapter and run cards. They run on the main process only.

From a shell: `python -m training.engine CONFIG.json [--resume] [--events PATH] [--stop-file PATH]`, the
JSON holding `train_file`, `output_dir`, optionally `eval_file` and `display` (`Display`'s fields), and
`TrainConfig` fields. `torchrun --nproc-per-node N -m training.engine CONFIG.json` trains data-parallel (DDP,
NCCL on GPUs, gloo on CPU); `batch_size` is per process, so a micro-step takes `batch_size × N` pairs, and the
losses equal one process's with that batch. `--events` makes rank 0 append every callback to PATH as a JSON
line and end with a `result` line; `--stop-file` stops the run once that file exists. `training.launch`
runs it so, as a child process, and behaves like `train`.

A run:
- Policy = base model + a fresh LoRA adapter (peft); reference = the same model with the adapter disabled,
  no second copy. Reference log-probs of every pair are computed once, before step 1, without gradients,
  and cached in `output_dir/reference_logps.safetensors`, which a resumed run reuses. A step is one
  forward and one backward: chosen and rejected share one forward and the LM head runs on completion
  positions only (`training.dpo`).
- With `sft_weight` > 0 the loss adds that weight times the mean negative log-likelihood of the chosen
  completions' tokens (TRL's `loss_type=[..., "sft"]` with `loss_weights=[1, sft_weight]`; RPO, Pang et al.
  2024, arXiv:2404.19733), so the model also learns to write the chosen answers instead of only pushing the
  rejected ones down; it is logged as `nll_loss` (`loss` stays the preference loss).
- AdamW, linear warmup then cosine decay, gradient accumulation, clipping; bf16 autocast on CUDA, fp32 on
  CPU; optional gradient checkpointing. On CPU, a seed gives the same losses every time.
- Evaluation at step 0, every `eval_steps` and at the end: TRL's `loss`, `rewards/chosen`,
  `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`, `logps/rejected`, plus
  `logps/preference_share`, the share of pairs whose mean per-token log-prob is higher for chosen than for
  rejected (the implicit rewards are all zero at step 0; this share is not).
- Checkpoints every `save_steps` and on a stop, in `output_dir/checkpoints/step-NNNNNN/`: adapter,
  optimizer, scheduler, RNG states, the epoch's batch order and the history. `resume=True` continues after
  the latest and reproduces the uninterrupted run's losses on CPU. Loading uses safetensors and
  `torch.load(weights_only=True)` only.
- Output in `output_dir`: the adapter (`save_pretrained`, safetensors; `PeftModel.from_pretrained(base,
  output_dir)` loads it), the tokenizer, `run_card.json` and `run_card.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.compare import share_change
from training.config import REFERENCE_FREE_LOSS_TYPES, TrainConfig
from training.data import (
    DATA_REPORT,
    REASON_TEXT,
    REPORT_IDS,
    DataReport,
    TokenizedPair,
    batch_plan,
    check_files,
    eval_plan,
    format_check,
    load_pairs,
)
from training.dpo import pack_pairs, pair_logps, preference_loss, preference_metrics

logger = logging.getLogger(__name__)

# Fields a resumed run may change: none of them alters a number the run computes.
RESUMABLE_CHANGES = frozenset({"eval_steps", "save_steps", "save_total_limit", "eval_batch_size"})
REFERENCE_CACHE = "reference_logps.safetensors"
PHASES = ("loading", "reference", "training", "evaluating", "saving")


@dataclass(frozen=True)
class Progress:
    """One finished optimizer step, with the speed of the steps this process has run."""

    step: int
    total_steps: int
    epoch: float  # epochs done, fractional
    tokens_per_second: float  # prompt + completion tokens of both sequences of each pair
    eta_seconds: float
    metrics: dict[str, float]  # METRIC_NAMES over the step's pairs, plus learning_rate and grad_norm


@dataclass
class Callbacks:
    """Optional hooks for `train`; see the module docstring. All run on the main process, in the training
    loop's thread: keep them cheap (a slow hook slows every process, which wait for the main one)."""

    on_progress: Callable[[Progress], None] | None = None
    on_eval: Callable[[int, dict[str, float]], None] | None = None
    on_log: Callable[[str], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_data: Callable[[dict[str, dict[str, Any]]], None] | None = None
    # What the run is doing before and between steps, with its own progress: (phase, done, total), where
    # phase is one of PHASES and done / total count pairs (reference, evaluating) or are 0 / 0.
    on_phase: Callable[[str, int, int], None] | None = None
    # A checkpoint folder (output_dir/checkpoints/step-NNNNNN) once it is complete on disk; older ones
    # beyond save_total_limit are already pruned.
    on_checkpoint: Callable[[Path], None] | None = None
    # output_dir once the adapter, tokenizer and run cards are written (stopped runs too).
    on_outputs: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class Display:
    """How a run names things for people: the base model by its name (as the app's allow-list has it, and
    where that list says it comes from) rather than the folder it loads from, and files relative to the
    storage they live in (the first of `roots` that holds them)."""

    model: str | None = None
    model_source: str | None = None
    roots: tuple[Path, ...] = ()

    def path(self, path: Path | str) -> str:
        resolved = Path(path).resolve()
        for root in self.roots:
            with contextlib.suppress(ValueError):
                return str(resolved.relative_to(Path(root).resolve()))
        return str(path)


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int  # optimizer steps done
    total_steps: int
    metrics: dict[str, float] | None  # final evaluation; None when stopped
    initial_metrics: dict[str, float]  # evaluation at step 0
    # DataReport.to_dict() of "train" (and "eval"): kept, dropped and changed pairs by reason, the first ids
    data: dict[str, dict[str, Any]]
    artifact_dir: Path
    device: str  # "cpu", "cuda:0", ...
    # This process's run: reference_seconds, train_seconds (the step loop), tokens, tokens_per_second.
    timings: dict[str, float]
    # training.compare.ShareChange.to_dict(): held-out share at step 0 and at the end; None when stopped
    share_change: dict[str, Any] | None = None


class _Dist:
    """This process's place in a torchrun job, or a world of one."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.owned = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
        if self.owned:
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        self.active = dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self.active else (0, 1)
        self.main = self.rank == 0
        self.device = torch.device("cpu")
        if torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)

    def sum(self, tensor: Tensor) -> Tensor:
        """Element-wise sum over processes, on CPU: exact where each value is non-zero on one process only."""
        if self.active:
            tensor = tensor.to(self.device)
            torch.distributed.all_reduce(tensor)
        return tensor.cpu()

    def agree(self, flag: bool) -> bool:
        """The main process's `flag`, on every process."""
        return bool(self.sum(torch.tensor([float(flag and self.main)])).item())

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owned:
            torch.distributed.destroy_process_group()


def load_model(config: TrainConfig, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """`(peft_model, tokenizer)`: the base model with a fresh LoRA adapter, seeded as TRL's DPOTrainer does.

    Dropout in the base model is switched off (as TRL does), so policy and reference agree exactly while the
    adapter is zero. Weights load in bf16 on CUDA, fp32 elsewhere, with SDPA attention.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    device = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa"
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    set_seed(config.seed)  # the LoRA A matrices are drawn next
    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.to(device), tokenizer


def _reuse_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux, CPU runs).

    A CPU step allocates and frees the same few hundred MB of activations. With glibc's defaults each big
    block is mmap'ed and unmapped every time, so every step faults it back in page by page (about 80,000
    minor faults a step for SmolLM2-135M). Raising the mmap and trim thresholds lets malloc reuse the blocks.
    It applies to the whole process: the worker's job process or the command line, which end with the run.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 2**31 - 1)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _pack(pairs: list[TokenizedPair], indices: list[int], pad_token_id: int):
    return pack_pairs(
        [(pairs[i].prompt, pairs[i].chosen, pairs[i].rejected) for i in indices], pad_token_id=pad_token_id
    )


def sequence_logps(
    model: Any,
    pairs: list[TokenizedPair],
    *,
    batch_size: int,
    pad_token_id: int,
    reference: bool,
    dist: _Dist | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs `(chosen, rejected)` of `pairs`, each `(len(pairs),)` float32 on CPU.

    No gradients; `reference=True` disables the adapter. Batches are sorted by length and shared out over
    the processes of `dist`; `progress(done, total)` follows each batch (pairs of this process, scaled to
    all of them).
    """
    dist = dist or _Dist()
    device = next(model.parameters()).device
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    was_training = model.training
    model.eval()
    with (
        torch.inference_mode(),
        model.disable_adapter() if reference else contextlib.nullcontext(),
        _autocast(device),
    ):
        mine = eval_plan([p.length for p in pairs], batch_size=batch_size)[dist.rank :: dist.world]
        done = 0
        for indices in mine:
            c, r = pair_logps(model, _pack(pairs, indices, pad_token_id).to(device))
            chosen[indices], rejected[indices] = c.float().cpu(), r.float().cpu()
            done += len(indices)
            if progress:
                progress(min(len(pairs), done * dist.world), len(pairs))
    model.train(was_training)
    both = dist.sum(torch.stack([chosen, rejected]))
    return both[0], both[1]


def loss_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of `training.dpo.preference_loss` that `config` sets."""
    return {
        "beta": config.beta,
        "loss_type": config.loss_type,
        "label_smoothing": config.label_smoothing,
        "gamma": config.simpo_gamma,
    }


class _PolicyLogps(torch.nn.Module):
    """The policy's forward as one module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch) -> tuple[Tensor, Tensor]:
        return pair_logps(self.model, batch)


def _cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to zero: transformers' `get_cosine_schedule_with_warmup`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


@dataclass
class _Split:
    pairs: list[TokenizedPair]
    report: DataReport
    lengths: tuple[Tensor, Tensor]  # scored completion tokens, chosen and rejected
    reference: tuple[Tensor, Tensor] | tuple[None, None] = (None, None)


def _load_split(path: Path, tokenizer: Any, config: TrainConfig, display: Display) -> _Split:
    pairs, report = load_pairs(
        path,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        system_turn=config.system_turn,
    )
    report.file = display.path(path)
    if not pairs:
        dropped = ", ".join(f"{len(ids)} {why}" for why, ids in report.dropped.items()) or "the file is empty"
        raise ValueError(f"{path.name}: no pair can be trained on ({dropped}).")
    # pack_pairs scores every completion token after a non-empty prompt, all but the first otherwise.
    lengths = tuple(
        torch.tensor([len(getattr(p, side)) - (not p.prompt) for p in pairs], dtype=torch.float32)
        for side in ("chosen", "rejected")
    )
    return _Split(pairs, report, lengths)


class _Run:
    """One process's training run: model, data, optimizer, and what it has measured."""

    def __init__(
        self,
        config: TrainConfig,
        train_file: Path,
        eval_file: Path | None,
        output_dir: Path,
        callbacks: Callbacks,
        dist: _Dist,
        display: Display,
    ):
        from torch.nn.parallel import DistributedDataParallel

        self.config, self.output_dir, self.callbacks, self.dist = config, output_dir, callbacks, dist
        self.display = display
        self.phase("loading")
        self.started = time.time()
        self.history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []
        self.preferred: dict[
            int, list[bool]
        ] = {}  # eval step -> per eval pair: chosen has the higher mean logp
        self.log(
            f"Preference tuning ({config.loss_type}) of {display.model or config.base_model}, "
            f"device {dist.device}, {dist.world} process(es)"
        )
        if dist.device.type == "cpu":
            _reuse_freed_memory()
        self.model, self.tokenizer = load_model(config, dist.device)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.eval_batch_size = config.eval_batch_size or 2 * config.batch_size
        self.train_split = _load_split(train_file, self.tokenizer, config, display)
        self.eval_split = (
            _load_split(eval_file, self.tokenizer, config, display) if eval_file else self.train_split
        )
        self.splits = (
            {"train": self.train_split, "eval": self.eval_split} if eval_file else {"train": self.train_split}
        )
        for name, split in self.splits.items():
            for line in split.report.lines(name):
                self.log(line)
        if dist.main:
            output_dir.mkdir(parents=True, exist_ok=True)
            full = {name: split.report.to_dict() for name, split in self.splits.items()}
            (output_dir / DATA_REPORT).write_text(json.dumps(full, indent=1) + "\n")
            if callbacks.on_data:
                callbacks.on_data(self.data_report())
        if len(self.train_split.pairs) < dist.world:
            raise ValueError(
                f"{len(self.train_split.pairs)} training pairs cannot be shared by {dist.world} processes."
            )

        started = time.perf_counter()
        if config.loss_type not in REFERENCE_FREE_LOSS_TYPES:
            self.attach_reference()
        self.reference_seconds = time.perf_counter() - started

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.plan_epoch, self.plan = -1, []
        self.steps_per_epoch = math.ceil(len(self.epoch_plan(0)) / config.gradient_accumulation_steps)
        self.total_steps = config.max_steps or config.num_epochs * self.steps_per_epoch
        warmup = math.ceil(self.total_steps * config.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _cosine_with_warmup(self.total_steps, warmup)
        )
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        self.ddp = (
            DistributedDataParallel(_PolicyLogps(self.model), device_ids=device_ids) if dist.active else None
        )
        self.policy = self.ddp or _PolicyLogps(self.model)
        self.model.train()

    def log(self, line: str) -> None:
        if self.dist.main:
            logger.info(line)
            if self.callbacks.on_log:
                self.callbacks.on_log(line)

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        if self.dist.main and self.callbacks.on_phase:
            self.callbacks.on_phase(name, done, total)

    def attach_reference(self) -> None:
        """Reference log-probs of every pair: read from the run's cache, or computed now and cached."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        digest = hashlib.sha256(json.dumps([self.config.base_model, str(self.model.dtype)]).encode())
        digest.update(self.model.get_base_model().config.to_json_string().encode())
        for name, split in self.splits.items():
            digest.update(name.encode())
            for pair in split.pairs:
                digest.update(repr((pair.prompt, pair.chosen, pair.rejected)).encode())
        fingerprint, path = digest.hexdigest(), self.output_dir / REFERENCE_CACHE
        if path.exists():
            with safe_open(path, "pt") as f:
                if f.metadata().get("fingerprint") == fingerprint:
                    for name, split in self.splits.items():
                        split.reference = (f.get_tensor(f"{name}_chosen"), f.get_tensor(f"{name}_rejected"))
                    self.log(f"reference log-probs read from {self.display.path(path)}")
                    return
        for name, split in self.splits.items():
            started = time.perf_counter()
            split.reference = sequence_logps(
                self.model,
                split.pairs,
                batch_size=self.eval_batch_size,
                pad_token_id=self.pad_token_id,
                reference=True,
                dist=self.dist,
                progress=lambda done, total, name=name: self.phase(f"reference:{name}", done, total),
            )
            self.log(
                f"reference log-probs of {len(split.pairs)} {name} pairs in "
                f"{time.perf_counter() - started:.1f}s"
            )
        if self.dist.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            tensors = {
                f"{n}_{side}": s.reference[i]
                for n, s in self.splits.items()
                for i, side in enumerate(("chosen", "rejected"))
            }
            save_file(tensors, path.with_suffix(".tmp"), metadata={"fingerprint": fingerprint})
            os.replace(path.with_suffix(".tmp"), path)

    def evaluate(self, step: int) -> dict[str, float]:
        split = self.eval_split
        if step == 0 and split.reference[0] is not None:
            policy = split.reference  # a fresh LoRA adapter adds exact zeros: the policy is the reference
        else:
            policy = sequence_logps(
                self.model,
                split.pairs,
                batch_size=self.eval_batch_size,
                pad_token_id=self.pad_token_id,
                reference=False,
                dist=self.dist,
                progress=lambda done, total: self.phase("evaluating", done, total),
            )
        metrics = preference_metrics(
            *policy,
            *split.reference,
            chosen_lengths=split.lengths[0],
            rejected_lengths=split.lengths[1],
            **loss_options(self.config),
        )
        if self.config.sft_weight:
            metrics["nll_loss"] = (-policy[0].sum() / split.lengths[0].sum().clamp(min=1)).item()
        means = [logps / lengths.clamp(min=1) for logps, lengths in zip(policy, split.lengths, strict=True)]
        self.preferred[step] = (means[0] > means[1]).tolist()
        self.eval_history.append({"step": step, **metrics})
        self.log(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.dist.main and self.callbacks.on_eval:
            self.callbacks.on_eval(step, metrics)
        return metrics

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        if self.plan_epoch != epoch:
            lengths = [p.length for p in self.train_split.pairs]
            plan = batch_plan(
                lengths,
                batch_size=self.config.batch_size * self.dist.world,
                seed=self.config.seed,
                epoch=epoch,
            )
            # Every process needs a pair of each batch: a last batch too small to share is left out.
            self.plan, self.plan_epoch = [b for b in plan if len(b) >= self.dist.world], epoch
        return self.plan

    def train_step(self, step: int) -> tuple[dict[str, float], int]:
        """Optimizer step `step` (0-based): its metrics over all processes, and the tokens it took."""
        split, dist, ga = self.train_split, self.dist, self.config.gradient_accumulation_steps
        epoch, index = divmod(step, self.steps_per_epoch)
        micro_batches = self.epoch_plan(epoch)[index * ga : (index + 1) * ga]
        everything = [i for batch in micro_batches for i in batch]
        chosen, rejected = torch.zeros(len(everything)), torch.zeros(len(everything))
        # The SFT term is a mean over the step's chosen tokens, as TRL's "sft" loss is over a batch's.
        chosen_tokens = float(split.lengths[0][everything].sum().clamp(min=1))
        offset = 0
        for k, batch_indices in enumerate(micro_batches):
            mine = range(dist.rank, len(batch_indices), dist.world)
            indices = [batch_indices[j] for j in mine]
            batch = _pack(split.pairs, indices, self.pad_token_id).to(dist.device)
            syncing = self.ddp is None or k == len(micro_batches) - 1
            with contextlib.nullcontext() if syncing else self.ddp.no_sync():
                with _autocast(dist.device):
                    policy = self.policy(batch)
                policy = (policy[0].float(), policy[1].float())
                reference = [None if s is None else s[indices].to(dist.device) for s in split.reference]
                losses, _, _ = preference_loss(
                    *policy,
                    *reference,
                    chosen_lengths=batch.chosen_lengths.float(),
                    rejected_lengths=batch.rejected_lengths.float(),
                    **loss_options(self.config),
                )
                total = losses.sum()
                if self.config.sft_weight:
                    total = total - self.config.sft_weight * policy[0].sum() * len(everything) / chosen_tokens
                # DDP averages gradients over processes; so scaled, the step's loss is its pairs' mean.
                (total * dist.world / len(everything)).backward()
            positions = [offset + j for j in mine]
            chosen[positions], rejected[positions] = policy[0].detach().cpu(), policy[1].detach().cpu()
            offset += len(batch_indices)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        both = dist.sum(torch.stack([chosen, rejected]))
        metrics = preference_metrics(
            both[0],
            both[1],
            *[None if s is None else s[everything] for s in split.reference],
            chosen_lengths=split.lengths[0][everything],
            rejected_lengths=split.lengths[1][everything],
            **loss_options(self.config),
        )
        metrics |= {"learning_rate": learning_rate, "grad_norm": grad_norm.item()}
        if self.config.sft_weight:
            metrics["nll_loss"] = -both[0].sum().item() / chosen_tokens
        pairs = [split.pairs[i] for i in everything]
        return metrics, sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        """Write the checkpoint of `state["step"]` atomically (a folder renamed once complete); prune."""
        root = self.output_dir / "checkpoints"
        final, partial = root / f"step-{state['step']:06d}", root / f".step-{state['step']:06d}.partial"
        if self.dist.main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        self.dist.barrier()
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.dist.device)
        torch.save(rng, partial / f"rng-{self.dist.rank}.pt")
        self.dist.barrier()
        if self.dist.main:
            self.model.save_pretrained(partial)
            torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), partial / "scheduler.pt")
            (partial / "state.json").write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            for old in sorted(root.glob("step-*"))[: -self.config.save_total_limit]:
                shutil.rmtree(old)
        self.dist.barrier()
        return final

    def restore_checkpoint(self) -> dict[str, Any] | None:
        """Load the latest checkpoint in the output dir into model, optimizer, scheduler and RNGs; its state.

        None when there is no complete checkpoint.
        """
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        found = sorted(
            p for p in (self.output_dir / "checkpoints").glob("step-*") if (p / "state.json").exists()
        )
        if not found:
            self.log("no checkpoint written yet: starting from step 0")
            return None
        path = found[-1]
        state = json.loads((path / "state.json").read_text())
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE_CHANGES}
        changed = sorted(  # a field added since the checkpoint was made counts as its default
            k
            for k, v in self.config.to_dict().items()
            if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != v
        )
        if changed:
            raise ValueError(f"Cannot resume from {path}: it was made with different {', '.join(changed)}.")
        if state["data_sha256"] != self.data_sha256() or state["world_size"] != self.dist.world:
            raise ValueError(f"Cannot resume from {path}: other data files or another number of processes.")
        device = self.dist.device
        set_peft_model_state_dict(
            self.model, load_file(path / "adapter_model.safetensors", device=str(device))
        )
        self.optimizer.load_state_dict(
            torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
        )
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / f"rng-{self.dist.rank}.pt", weights_only=True)
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], device)
        self.plan_epoch, self.plan = state["plan_epoch"], state["plan"]
        self.history, self.eval_history = state["history"], state["eval_history"]
        where = path.relative_to(self.output_dir)
        self.log(f"resumed after step {state['step']} of {self.total_steps} from {where}")
        return state

    def data_report(self) -> dict[str, dict[str, Any]]:
        """Each split's report with the first REPORT_IDS ids per reason (all ids are in DATA_REPORT)."""
        return {name: split.report.to_dict(ids_per_reason=REPORT_IDS) for name, split in self.splits.items()}

    def share_change(self, step: int) -> dict[str, Any] | None:
        """Held-out preference share at step 0 and at `step`, with its interval (training.compare)."""
        if 0 not in self.preferred or step not in self.preferred:
            return None
        return share_change(self.preferred[0], self.preferred[step], seed=self.config.seed).to_dict()

    def data_sha256(self) -> dict[str, str]:
        return {name: split.report.sha256 for name, split in self.splits.items()}

    def write_outputs(self, result: TrainResult) -> None:
        """Adapter, tokenizer and run cards in the output dir (main process)."""
        self.model.save_pretrained(self.output_dir)
        self.tokenizer.save_pretrained(self.output_dir)
        import peft
        import transformers

        config = {**self.config.to_dict(), "base_model": self.display.model or self.config.base_model}
        card = {
            "status": result.status,
            "base_model": self.display.model or self.config.base_model,
            "base_model_source": self.display.model_source or self.config.base_model,
            "step": result.step,
            "total_steps": result.total_steps,
            "config": config,
            "data": result.data,
            "eval_split": "eval" if "eval" in self.splits else "train (no eval file)",
            "metrics": {"step_0": result.initial_metrics, "final": result.metrics},
            "share_change": result.share_change,
            "history": self.history,
            "eval_history": self.eval_history,
            "hardware": {
                "device": result.device,
                "device_name": _device_name(self.dist.device),
                "processes": self.dist.world,
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
            "time": {
                "started": dt.datetime.fromtimestamp(self.started, dt.UTC).isoformat(timespec="seconds"),
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "wall_seconds": round(time.time() - self.started, 1),
                **{k: round(v, 2) for k, v in result.timings.items()},
            },
        }
        (self.output_dir / "run_card.json").write_text(json.dumps(card, indent=2) + "\n")
        (self.output_dir / "run_card.md").write_text(_run_card_markdown(card))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _run_card_markdown(card: dict[str, Any]) -> str:
    step0, final = card["metrics"]["step_0"], card["metrics"]["final"] or {}
    lines = [
        f"# DPO run: {card['status']} at step {card['step']} of {card['total_steps']}",
        "",
        f"Base model `{card['base_model']}`, LoRA adapter; loss `{card['config']['loss_type']}`, "
        f"β {card['config']['beta']}. Evaluated on the {card['eval_split']} split.",
        "",
        "## Data",
        "| split | file | sha256 | pairs | kept | dropped |",
        "|---|---|---|---|---|---|",
    ]
    reasons = []
    for name, r in card["data"].items():
        dropped = sum(r["dropped_counts"].values())
        file = Path(r["file"]).name
        lines.append(f"| {name} | `{file}` | `{r['sha256']}` | {r['total']} | {r['kept']} | {dropped} |")
        for kind, key in (("dropped", "dropped"), ("changed", "changed")):
            for reason, ids in r.get(key, {}).items():
                count = r[f"{key}_counts"][reason]
                listed = ", ".join(f"`{i}`" for i in ids[:10]) + (
                    f" and {count - 10} more" if count > 10 else ""
                )
                meaning = REASON_TEXT.get(reason, "")
                reasons.append(f"| {name} | {kind} | `{reason}` | {count} | {meaning} | {listed} |")
    if reasons:
        lines += ["", "| split | | reason | pairs | meaning | ids |", "|---|---|---|---|---|---|", *reasons]
        lines += ["", f"Every id, by reason: `{DATA_REPORT}`."]
    else:
        lines += ["", "Every pair was trained on exactly as written."]
    lines += ["", "## Before and after"]
    if card.get("share_change"):
        lines += [card["share_change"]["words"]]
    lines += [
        "",
        "| metric | step 0 | final |",
        "|---|---|---|",
    ]
    for k in step0:
        # The implicit rewards are zero for every pair at step 0: not a baseline, so not shown as one.
        before = "–" if k.startswith("rewards/") else f"{step0[k]:.4f}"
        after = f"{final[k]:.4f}" if k in final else ""
        lines.append(f"| {k} | {before} | {after} |")
    lines += ["", "Rewards are β·log(policy/reference): zero for every pair at step 0 by construction."]
    hw, t = card["hardware"], card["time"]
    lines += [
        "",
        "## Where and when",
        f"{hw['device']} ({hw['device_name']}), {hw['processes']} process(es); torch {hw['torch']}, "
        f"transformers {hw['transformers']}, peft {hw['peft']}. "
        f"Started {t['started']}, finished {t['finished']} "
        f"({t['wall_seconds']} s; reference pass {t['reference_seconds']} s, "
        f"training {t['train_seconds']} s, "
        f"{t['tokens_per_second']} tokens/s).",
        "",
        "## Configuration",
        "```json",
        json.dumps(card["config"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def train(
    config: TrainConfig,
    *,
    train_file: Path,
    eval_file: Path | None = None,
    output_dir: Path,
    callbacks: Callbacks | None = None,
    resume: bool = False,
    display: Display | None = None,
) -> TrainResult:
    """Tune `config.base_model` with a LoRA adapter on `train_file`; see the module docstring.

    `TrainConfig` is `training.config.TrainConfig` (torch-free, so the web app validates without the
    engine). `display` names the base model and roots the file paths that the log, the reports and the run
    card show. Raises `ValueError` for a malformed preference file, a file without a usable pair, or a
    resume whose checkpoint was made with another configuration, data or number of processes.
    """
    dist = _Dist()
    try:
        eval_path = Path(eval_file) if eval_file else None
        run = _Run(config, Path(train_file), eval_path, Path(output_dir), callbacks or Callbacks(), dist,
                   display or Display())  # fmt: skip
        return _loop(run, resume)
    finally:
        dist.close()


def _loop(run: _Run, resume: bool) -> TrainResult:
    config, dist, callbacks, total = run.config, run.dist, run.callbacks, run.total_steps
    state = run.restore_checkpoint() if resume else None
    if state is not None:
        step, tokens_before, seconds_before = state["step"], state["tokens"], state["train_seconds"]
        initial_metrics = state["initial_metrics"]
        if state.get("preferred_0") is not None:
            run.preferred[0] = state["preferred_0"]
    else:
        if dist.main:  # a fresh run: older checkpoints here would be resumed or pruned in its place
            shutil.rmtree(run.output_dir / "checkpoints", ignore_errors=True)
        dist.barrier()
        step, tokens_before, seconds_before = 0, 0, 0.0
        initial_metrics = run.evaluate(0)

    def checkpoint() -> None:
        state = {
            "step": step,
            "tokens": tokens_before + tokens,
            "train_seconds": seconds_before + time.perf_counter() - started,
            "config": config.to_dict(),
            "data_sha256": run.data_sha256(),
            "world_size": dist.world,
            "plan_epoch": run.plan_epoch,
            "plan": run.plan,
            "history": run.history,
            "eval_history": run.eval_history,
            "initial_metrics": initial_metrics,
            "preferred_0": run.preferred.get(0),
        }
        run.phase("saving")
        saved = run.save_checkpoint(state)
        run.log(f"checkpoint after step {step}: {saved.relative_to(run.output_dir)}")
        if dist.main and callbacks.on_checkpoint:
            callbacks.on_checkpoint(saved)
        run.phase("training", step, total)

    status, final_metrics, started, tokens, steps_run = "finished", None, time.perf_counter(), 0, 0
    run.phase("training", step, total)
    while step < total:
        if dist.agree(bool(dist.main and callbacks.should_stop and callbacks.should_stop())):
            status = "stopped"
            break
        metrics, step_tokens = run.train_step(step)
        step, steps_run, tokens = step + 1, steps_run + 1, tokens + step_tokens
        elapsed = time.perf_counter() - started
        run.history.append({"step": step, **metrics})
        progress = Progress(
            step,
            total,
            step / run.steps_per_epoch,
            tokens / elapsed,
            (total - step) * elapsed / steps_run,
            metrics,
        )
        run.log(
            f"step {step}/{total} loss {metrics['loss']:.4f} accuracy {metrics['rewards/accuracies']:.2f} "
            f"lr {metrics['learning_rate']:.2e} {progress.tokens_per_second:.0f} tokens/s "
            f"eta {progress.eta_seconds:.0f}s"
        )
        if dist.main and callbacks.on_progress:
            callbacks.on_progress(progress)
        if config.eval_steps and step % config.eval_steps == 0 and step < total:
            run.evaluate(step)
            run.phase("training", step, total)
        if config.save_steps and step % config.save_steps == 0 and step < total:
            checkpoint()
    train_seconds = time.perf_counter() - started
    if status == "stopped":
        checkpoint()
    else:
        final_metrics = run.evaluate(step)
    timings = {
        "reference_seconds": run.reference_seconds,
        "train_seconds": train_seconds,
        "tokens": tokens,
        "tokens_per_second": tokens / train_seconds if train_seconds > 0 else 0.0,
    }
    result = TrainResult(
        status,
        step,
        total,
        final_metrics,
        initial_metrics,
        run.data_report(),
        run.output_dir,
        str(dist.device),
        timings,
        share_change=run.share_change(step) if final_metrics is not None else None,
    )
    if dist.main:
        run.phase("saving")
        run.write_outputs(result)
    dist.barrier()
    if dist.main and callbacks.on_outputs:  # after the barrier: the other processes need not wait for it
        callbacks.on_outputs(run.output_dir)
    if result.share_change:
        run.log(result.share_change["words"])
    run.log(f"{status} after step {step}; adapter and run card in {run.display.path(run.output_dir)}")
    return result


def check_data(
    config: TrainConfig, *, train_file: Path, eval_file: Path | None = None, limit: int | None = None
) -> dict[str, Any]:
    """What a run with `config` would train on, from the tokenizer alone (no weights): `training.data.
    check_files` of the train (and eval) file, with the settings it used and the seconds it took."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    files = {"train": Path(train_file), **({"eval": Path(eval_file)} if eval_file else {})}
    check = check_files(files, tokenizer, max_length=config.max_length,
                        max_prompt_length=config.max_prompt_length, system_turn=config.system_turn,
                        limit=limit)  # fmt: skip
    settings = {
        k: getattr(config, k) for k in ("base_model", "max_length", "max_prompt_length", "system_turn")
    }
    return {**check, "settings": settings, "seconds": round(time.perf_counter() - started, 2)}


class _EventFile:
    """Callbacks that append each call to a file as one JSON object a line, flushed (`main --events`)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        self.file.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self.file.flush()

    def callbacks(self, should_stop: Callable[[], bool] | None) -> Callbacks:
        return Callbacks(
            on_progress=lambda progress: self.write("progress", **dataclasses.asdict(progress)),
            on_eval=lambda step, metrics: self.write("eval", step=step, metrics=metrics),
            on_log=lambda line: self.write("log", line=line),
            should_stop=should_stop,
            on_data=lambda report: self.write("data", report=report),
            on_phase=lambda name, done, total: self.write("phase", name=name, done=done, total=total),
            on_checkpoint=lambda path: self.write("checkpoint", path=path),
            on_outputs=lambda path: self.write("outputs", path=path),
        )


def end_with_parent(sig: int, *, parent: int | None = None) -> None:
    """Have the kernel send this process signal `sig` when its parent dies (Linux; nothing elsewhere).

    Exits at once (SystemExit) if the parent has already gone: the process has been re-parented to init, or
    its parent is not `parent` (a pid) when that is given.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1  # <sys/prctl.h>
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    if os.getppid() == 1 or parent not in (None, os.getppid()):
        raise SystemExit(f"pid {os.getpid()}: the parent process has gone; not starting")


def main(argv: list[str] | None = None) -> int:
    """`python -m training.engine CONFIG.json [--resume] [--events PATH] [--stop-file PATH] | CONFIG.json
    --check [--json] [--limit N]`; exit status 0 finished (or a usable check), 3 stopped (0 with `--events`,
    whose `result` line says which), 4 a check that finds nothing to train on.

    The JSON may also hold `display`: `{"model", "model_source", "roots"}` as in `Display`.

    `--events PATH`: rank 0 appends one JSON object a line (NaN as Python writes it), flushed, for every
    callback: `{"event": "progress", <Progress fields>}`, `{"event": "eval", "step", "metrics"}`,
    `{"event": "log", "line"}`, `{"event": "data", "report"}`, `{"event": "phase", "name", "done", "total"}`,
    `{"event": "checkpoint", "path"}`, `{"event": "outputs", "path"}`; last `{"event": "result", <TrainResult
    fields>}`, paths as strings. `--stop-file PATH`: `should_stop` says yes once PATH exists.
    """
    parser = argparse.ArgumentParser(
        prog="python -m training.engine", description="Run one DPO training job, or check its data."
    )
    parser.add_argument(
        "config",
        type=Path,
        help="JSON: train_file, output_dir, optional eval_file and display, TrainConfig fields",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue after the latest checkpoint in output_dir"
    )
    parser.add_argument(
        "--events",
        type=Path,
        help="append every callback of the main process to this file as one JSON object a line "
        '({"event": "progress" | "eval" | "log" | "data" | "phase" | "checkpoint" | "outputs", ...}), then '
        'the outcome ({"event": "result", ...TrainResult}); log lines go there instead of stdout, and a '
        "stopped run exits 0",
    )
    parser.add_argument(
        "--stop-file",
        type=Path,
        help="stop before the next step once this file exists (a checkpoint and the outputs are written)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the tokenizer only and report the pairs kept, dropped and changed by reason, the token "
        "lengths and three pairs with their token boundaries; train nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --check: print the check as JSON")
    parser.add_argument("--limit", type=int, help="with --check: tokenize only the first N rows of each file")
    args = parser.parse_args(argv)
    spec = json.loads(args.config.read_text())
    needed = {"train_file"} if args.check else {"train_file", "output_dir"}
    if not isinstance(spec, dict) or not needed <= spec.keys():
        parser.error(f"{args.config} must be a JSON object with {' and '.join(sorted(needed))}")
    paths = {key: spec.pop(key, None) for key in ("train_file", "eval_file", "output_dir")}
    shown = spec.pop("display", None) or {}
    eval_file = Path(paths["eval_file"]) if paths["eval_file"] else None
    if args.check:
        config = TrainConfig.from_dict(spec)
        check = check_data(
            config, train_file=Path(paths["train_file"]), eval_file=eval_file, limit=args.limit
        )
        print(json.dumps(check) if args.json else format_check(check))
        return 0 if check["usable"] else 4
    display = Display(**{**shown, "roots": tuple(Path(root) for root in shown.get("roots", ()))})
    if args.events and "LOCAL_RANK" in os.environ:
        # A worker of an agent that was killed outright would wait in a collective for ever. (An agent asked
        # to stop ends its workers itself.)
        end_with_parent(signal.SIGKILL)
    events = _EventFile(args.events) if args.events and int(os.environ.get("RANK", "0")) == 0 else None
    stop_file = args.stop_file
    should_stop = (lambda: stop_file.exists()) if stop_file else None
    if events is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    try:
        result = train(
            TrainConfig.from_dict(spec),
            train_file=Path(paths["train_file"]),
            eval_file=eval_file,
            output_dir=Path(paths["output_dir"]),
            callbacks=events.callbacks(should_stop) if events else Callbacks(should_stop=should_stop),
            resume=args.resume,
            display=display,
        )
        if events:
            events.write("result", **dataclasses.asdict(result))
    finally:
        if events:
            events.file.close()
    return 0 if result.status == "finished" or args.events else 3


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    # Under torchrun, an uncaught exception also goes to this worker's error file (TORCHELASTIC_ERROR_FILE),
    # from which the agent, and training.launch, tell which rank failed and why.
    sys.exit(record(main)())
