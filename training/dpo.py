"""Preference losses and completion log-probabilities for DPO-style tuning. Torch only.

`preference_loss` turns sequence log-probabilities into per-pair losses and implicit rewards, with the same
formulas as TRL's `DPOTrainer` (and TRL's `CPOTrainer` for SimPO). `pack_pairs` lays a batch of tokenized
pairs out for one forward pass and `pair_logps` runs it: each row holds one pair as
`[prompt, chosen, rejected]`, where the rejected tokens see the prompt but not the chosen ones (a block
attention mask, and position ids that restart after the prompt). Each sequence therefore gets exactly the
log-probabilities it would get alone, while the prompt is encoded once instead of twice and the only padding
is at the end of shorter rows. The LM head is applied only at the positions that predict a completion token,
a chunk at a time, so no (tokens × vocabulary) tensor is kept for the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import LOSS_TYPES, SMOOTHED_LOSS_TYPES

# TRL's names for the evaluation metrics, plus the share of pairs whose chosen completion has the higher mean
# per-token log-prob (the implicit rewards are all zero before training; this share is not).
METRIC_NAMES = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logps/preference_share",
)


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    gamma: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair preference losses and implicit rewards.

    All inputs have shape `(B,)`: log-probabilities are sums over each completion's tokens (natural log),
    lengths are the numbers of completion tokens. Returns `(losses, chosen_rewards, rejected_rewards)`, each
    `(B,)`; average `losses` for the batch loss. The rewards are detached.

    With the log-ratios `c = policy_chosen - ref_chosen`, `r = policy_rejected - ref_rejected`,
    `Δ = c - r` and `ε = label_smoothing`:

    - `sigmoid`, DPO (Rafailov et al. 2023, arXiv:2305.18290, Eq. 7): `-log σ(βΔ)`. With `ε > 0` it is
      conservative DPO, cDPO (Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO"):
      `-(1-ε) log σ(βΔ) - ε log σ(-βΔ)`.
    - `ipo`, IPO (Azar et al. 2023, arXiv:2310.12036, Eq. 17), length-normalised as TRL does (checked with
      the authors): `(c/|y⁺| - r/|y⁻| - 1/(2β))²`. Needs `chosen_lengths` and `rejected_lengths`.
    - `hinge`, SLiC-HF (Zhao et al. 2023, arXiv:2305.10425, Eq. 2 on log-ratios, as in RSO, Liu et al. 2023,
      arXiv:2309.06657): `max(0, 1 - βΔ)`.
    - `robust`, robust DPO (Chowdhury et al. 2024, arXiv:2403.00409, Eq. 7) for labels flipped with rate
      `ε < 0.5`: `(-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)`.
    - `simpo`, SimPO (Meng et al. 2024, arXiv:2405.14734, Eq. 6), reference-free (pass `None` for the
      reference log-probs): with the mean per-token log-probs `a⁺ = policy_chosen/|y⁺|` and
      `a⁻ = policy_rejected/|y⁻|` and `z = β(a⁺ - a⁻) - γ`: `-log σ(z)`, label-smoothed like cDPO when `ε > 0`
      (as TRL's `CPOTrainer`).

    Rewards are `β·c` and `β·r` (TRL's `rewards/chosen` and `rewards/rejected`); for SimPO, which has no
    reference, they are `β·a⁺` and `β·a⁻`, as TRL's `CPOTrainer` reports them.

    Raises `ValueError` for an unknown `loss_type`, missing lengths or reference log-probs the loss needs,
    or `label_smoothing` the loss would ignore.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}.")
    if label_smoothing and loss_type not in SMOOTHED_LOSS_TYPES:
        raise ValueError(f"label_smoothing has no effect on the {loss_type!r} loss; leave it at 0.")
    eps = label_smoothing
    if loss_type in ("ipo", "simpo") and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(f"The {loss_type!r} loss needs chosen_lengths and rejected_lengths.")

    if loss_type == "simpo":
        chosen_avg = policy_chosen_logps / chosen_lengths.clamp(min=1)
        rejected_avg = policy_rejected_logps / rejected_lengths.clamp(min=1)
        z = beta * (chosen_avg - rejected_avg) - gamma
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()

    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(f"The {loss_type!r} loss needs reference log-probabilities.")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "robust":
        if not 0 <= eps < 0.5:
            raise ValueError(f"The robust loss needs 0 <= label_smoothing < 0.5, got {eps}.")
        losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    else:  # ipo
        normalized = chosen_logratios / chosen_lengths.clamp(
            min=1
        ) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (normalized - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def preference_metrics(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    *,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    **loss_options: Any,
) -> dict[str, float]:
    """METRIC_NAMES averaged over the `B` pairs; arguments as for `preference_loss` (given `loss_options`).

    `rewards/accuracies` counts strictly higher chosen rewards, as TRL does.
    """
    losses, chosen_rewards, rejected_rewards = preference_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        **loss_options,
    )
    chosen_mean = policy_chosen_logps / chosen_lengths.clamp(min=1)
    rejected_mean = policy_rejected_logps / rejected_lengths.clamp(min=1)
    values = (
        losses,
        chosen_rewards,
        rejected_rewards,
        (chosen_rewards > rejected_rewards).float(),
        chosen_rewards - rejected_rewards,
        policy_chosen_logps,
        policy_rejected_logps,
        (chosen_mean > rejected_mean).float(),
    )
    return {name: value.mean().item() for name, value in zip(METRIC_NAMES, values, strict=True)}


@dataclass
class PairBatch:
    """`B` preference pairs laid out for one forward pass (see the module docstring).

    Row `i` of the `(B, T)` tensors holds pair `i` as prompt, chosen, rejected, then padding. The `N`
    completion tokens are scored from flat positions of the `(B*T, H)` hidden states: token `k` is
    `target_ids[k]`, predicted from position `source_index[k]`, and belongs to sequence `sequence_index[k]`
    (`i` for pair `i`'s chosen completion, `B + i` for its rejected one).
    """

    input_ids: Tensor  # (B, T) long
    position_ids: Tensor  # (B, T) long
    attention_mask: Tensor  # (B, 1, T, T) bool, True where a query may attend to a key
    source_index: Tensor  # (N,) long
    target_ids: Tensor  # (N,) long
    sequence_index: Tensor  # (N,) long
    chosen_lengths: Tensor  # (B,) scored chosen tokens
    rejected_lengths: Tensor  # (B,) scored rejected tokens
    num_tokens: (
        int  # tokens of the two sequences as separate rows would hold them: 2·prompt + chosen + rejected
    )

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return PairBatch(**moved, num_tokens=self.num_tokens)


_PROMPT, _CHOSEN, _REJECTED, _PAD = 0, 1, 2, 3


def pack_pairs(
    pairs: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]], *, pad_token_id: int
) -> PairBatch:
    """Lay out `(prompt_ids, chosen_ids, rejected_ids)` triples as a `PairBatch`.

    Completions must be non-empty. Every completion token is scored except one with nothing before it (an
    empty prompt leaves the first token of each completion unscored, as in a plain causal forward).
    """
    if not pairs:
        raise ValueError("pack_pairs needs at least one pair.")
    width = max(len(p) + len(c) + len(r) for p, c, r in pairs)
    rows, positions, segments = [], [], []
    source, target, sequence = [], [], []
    chosen_lengths, rejected_lengths = [], []
    num_tokens = 0
    n = len(pairs)
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        p, c, r = len(prompt), len(chosen), len(rejected)
        if not c or not r:
            raise ValueError(f"Pair {i} has an empty completion.")
        pad = width - p - c - r
        rows.append([*prompt, *chosen, *rejected] + [pad_token_id] * pad)
        positions.append([*range(p + c), *range(p, p + r)] + [0] * pad)
        segments.append([_PROMPT] * p + [_CHOSEN] * c + [_REJECTED] * r + [_PAD] * pad)
        base = i * width
        # Token t of a completion is predicted by the hidden state of the token before it in its own sequence:
        # for the rejected completion's first token that is the prompt's last token, not the chosen's.
        chosen_sources = range(p - 1, p + c - 1)
        rejected_sources = [p - 1, *range(p + c, p + c + r - 1)]
        scored_c = [(s, t) for s, t in zip(chosen_sources, chosen, strict=True) if s >= 0]
        scored_r = [(s, t) for s, t in zip(rejected_sources, rejected, strict=True) if s >= 0]
        source += [base + s for s, _ in scored_c] + [base + s for s, _ in scored_r]
        target += [t for _, t in scored_c] + [t for _, t in scored_r]
        sequence += [i] * len(scored_c) + [n + i] * len(scored_r)
        chosen_lengths.append(len(scored_c))
        rejected_lengths.append(len(scored_r))
        num_tokens += 2 * p + c + r

    seg = torch.tensor(segments)
    idx = torch.arange(width)
    causal = idx[None, :, None] >= idx[None, None, :]
    same_segment = seg[:, :, None] == seg[:, None, :]
    key_is_prompt = (seg == _PROMPT)[:, None, :]
    real = (seg != _PAD)[:, :, None] & (seg != _PAD)[:, None, :]
    # Padding queries attend to themselves only: a row with no key at all would give NaN in attention.
    mask = (causal & (same_segment | key_is_prompt) & real) | torch.eye(width, dtype=torch.bool)[None]
    return PairBatch(
        input_ids=torch.tensor(rows),
        position_ids=torch.tensor(positions),
        attention_mask=mask[:, None],
        source_index=torch.tensor(source),
        target_ids=torch.tensor(target),
        sequence_index=torch.tensor(sequence),
        chosen_lengths=torch.tensor(chosen_lengths),
        rejected_lengths=torch.tensor(rejected_lengths),
        num_tokens=num_tokens,
    )


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder backbone and the LM head of a Hugging Face causal LM, or of a peft model wrapping one.

    Raises `ValueError` for architectures that scale or soft-cap their logits: `pair_logps` applies the head
    as a plain linear layer.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    text_config = causal_lm.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier"):
        if getattr(text_config, name, None) not in (None, 1, 1.0):
            raise ValueError(
                f"{type(causal_lm).__name__} sets {name}; the DPO engine supports plain LM heads only."
            )
    return getattr(causal_lm, causal_lm.base_model_prefix), causal_lm.get_output_embeddings()


# Logits held at once by `_TokenLogps` (64 MB in float32), whatever the vocabulary size.
_LOGITS_PER_CHUNK = 1 << 24


class _TokenLogps(torch.autograd.Function):
    """log p(target | h) under a frozen linear head, chunk by chunk, keeping no (tokens × vocab) tensor.

    Per chunk: logits = h·Wᵀ + b and log p = logits[target] − logsumexp(logits). When `hidden` needs a
    gradient, d(log p)/dh = (onehot(target) − softmax(logits))·W is computed there and then, while the
    logits are at hand, and kept (tokens × hidden); backward only scales it. Same arithmetic as a plain
    head + cross-entropy, without its (tokens × vocab) activations (the idea of Liger's fused linear
    cross-entropy). W and b get no gradient.
    """

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int
    ) -> Tensor:
        logps = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight, bias).float()
            log_norm = logits.logsumexp(-1)
            logps[rows] = logits.gather(1, targets[rows, None])[:, 0] - log_norm
            if grad is not None:
                probs = logits.sub_(log_norm[:, None]).exp_()
                probs[torch.arange(probs.shape[0], device=probs.device), targets[rows]] -= 1
                grad[rows] = -(probs.to(weight.dtype) @ weight)
        ctx.save_for_backward(grad)
        return logps

    @staticmethod
    def backward(ctx, grad_logps: Tensor) -> tuple[Tensor, None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_logps[:, None].to(grad.dtype), None, None, None, None


def pair_logps(model: torch.nn.Module, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """Summed completion log-probabilities `(chosen, rejected)`, each `(B,)`, in float32.

    One forward of the backbone over `batch`; the LM head and the log-softmax run only on the `N` positions
    that predict completion tokens, in chunks (`_TokenLogps`) when the head is frozen. Gradients flow when
    the caller enables them.
    """
    backbone, head = causal_lm_parts(model)
    mask = batch.attention_mask
    attention = backbone.config._attn_implementation
    if attention not in ("sdpa", "eager"):
        raise ValueError(
            f"pair_logps needs 'sdpa' or 'eager' attention for its block mask, not {attention!r}."
        )
    if attention == "eager":
        # Eager attention adds its mask to the scores; SDPA takes the boolean mask as it is.
        dtype = next(backbone.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    hidden = backbone(
        input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids, use_cache=False
    ).last_hidden_state
    states = hidden.reshape(-1, hidden.shape[-1])[batch.source_index]
    frozen = not any(p.requires_grad for p in head.parameters())
    if isinstance(head, torch.nn.Linear) and frozen:
        chunk = max(1, _LOGITS_PER_CHUNK // head.out_features)
        token_logps = _TokenLogps.apply(states, head.weight, head.bias, batch.target_ids, chunk)
    else:  # a trainable head needs its own gradient: the plain way
        token_logps = -F.cross_entropy(head(states).float(), batch.target_ids, reduction="none")
    sums = torch.zeros(2 * batch.num_pairs, dtype=token_logps.dtype, device=token_logps.device)
    sums = sums.index_add(0, batch.sequence_index, token_logps)
    return sums[: batch.num_pairs], sums[batch.num_pairs :]
