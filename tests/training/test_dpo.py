"""training.dpo: the losses against TRL's own code; the packed forward against plain per-sequence ones."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from training.dpo import LOSS_TYPES, pack_pairs, pair_logps, preference_loss

# FIELD-NOTES' vector: policy -10 / -12, reference -11 / -11, beta 0.1.
POLICY = torch.tensor([-10.0]), torch.tensor([-12.0])
REFERENCE = torch.tensor([-11.0]), torch.tensor([-11.0])


@pytest.mark.parametrize(
    ("loss_type", "label_smoothing", "expected"),
    [("sigmoid", 0.0, 0.598139), ("hinge", 0.0, 0.8), ("robust", 0.1, 0.573139)],
)
def test_fixed_vector(loss_type: str, label_smoothing: float, expected: float) -> None:
    losses, chosen, rejected = preference_loss(
        *POLICY, *REFERENCE, beta=0.1, loss_type=loss_type, label_smoothing=label_smoothing
    )
    assert losses.item() == pytest.approx(expected, abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.1, -0.1), abs=1e-6)
    assert (chosen - rejected).item() == pytest.approx(0.2, abs=1e-6)


def test_cdpo_ipo_and_simpo_on_the_fixed_vector() -> None:
    # cDPO, ε 0.1: -(0.9 log σ(0.2) + 0.1 log σ(-0.2)).
    cdpo, _, _ = preference_loss(*POLICY, *REFERENCE, beta=0.1, label_smoothing=0.1)
    assert cdpo.item() == pytest.approx(0.9 * 0.598139 + 0.1 * 0.798139, abs=1e-6)
    lengths = {"chosen_lengths": torch.tensor([5.0]), "rejected_lengths": torch.tensor([4.0])}
    # IPO: log-ratios +1 / -1 over 5 / 4 tokens: (0.2 + 0.25 - 1/(2·0.1))².
    ipo, _, _ = preference_loss(*POLICY, *REFERENCE, beta=0.1, loss_type="ipo", **lengths)
    assert ipo.item() == pytest.approx((0.45 - 5.0) ** 2, abs=1e-5)
    # SimPO: mean log-probs -2 / -3, z = 0.1·1 - 0.5; no reference.
    simpo, chosen, rejected = preference_loss(
        *POLICY, None, None, beta=0.1, loss_type="simpo", gamma=0.5, **lengths
    )
    assert simpo.item() == pytest.approx(math.log1p(math.exp(0.4)), abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((-0.2, -0.3), abs=1e-6)


def test_label_smoothing_zero_is_plain_dpo_and_bad_arguments_are_refused() -> None:
    plain, _, _ = preference_loss(*POLICY, *REFERENCE, beta=0.1)
    smoothed, _, _ = preference_loss(*POLICY, *REFERENCE, beta=0.1, label_smoothing=0.0)
    assert torch.equal(plain, smoothed)
    with pytest.raises(ValueError, match="Unknown loss_type"):
        preference_loss(*POLICY, *REFERENCE, beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="no effect"):
        preference_loss(*POLICY, *REFERENCE, beta=0.1, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="chosen_lengths"):
        preference_loss(*POLICY, *REFERENCE, beta=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="reference"):
        preference_loss(*POLICY, None, None, beta=0.1)


def _trl_dpo(
    loss_type: str, beta: float, label_smoothing: float, per_token: torch.Tensor, mask: torch.Tensor, ref
):
    """TRL's `DPOTrainer._compute_loss` itself, on a stand-in model that returns `per_token` log-probs.

    `mask` is the (2B, T) completion mask; the rows are chosen then rejected, as TRL stacks them.
    """
    from trl import DPOTrainer

    def gather(x):
        return x

    accelerator = SimpleNamespace(device=torch.device("cpu"), gather=gather, gather_for_metrics=gather)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    zeros = torch.zeros_like(per_token)

    def model(**kwargs):
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    inputs = {
        "input_ids": torch.ones_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "ref_chosen_logps": ref[0],
        "ref_rejected_logps": ref[1],
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[0] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize(
    ("loss_type", "label_smoothing"), [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_losses_equal_trl_on_random_tensors(loss_type: str, label_smoothing: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pairs, width = 8, 24
    # Rows: a prompt of 1-7 tokens, then a completion of 3-16 tokens, then padding.
    starts = torch.randint(1, 8, (2 * pairs,), generator=g)
    ends = starts + torch.randint(3, 17, (2 * pairs,), generator=g)
    position = torch.arange(width)
    mask = ((position >= starts[:, None]) & (position < ends[:, None])).long()
    per_token = -torch.rand(2 * pairs, width - 1, generator=g) * 3 * mask[:, 1:]
    ref = -torch.rand(pairs, generator=g) * 20 - 10, -torch.rand(pairs, generator=g) * 20 - 10
    beta = 0.05 + 0.5 * torch.rand(1, generator=g).item()

    trl_loss, trl_metrics = _trl_dpo(loss_type, beta, label_smoothing, per_token, mask, ref)
    policy = per_token.sum(1).chunk(2)
    lengths = mask.sum(1).float().chunk(2)
    losses, chosen, rejected = preference_loss(
        *policy,
        *ref,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        chosen_lengths=lengths[0],
        rejected_lengths=lengths[1],
    )
    assert losses.mean().item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    assert chosen.mean().item() == pytest.approx(trl_metrics["rewards/chosen"], rel=1e-5, abs=1e-6)
    assert rejected.mean().item() == pytest.approx(trl_metrics["rewards/rejected"], rel=1e-5, abs=1e-6)
    accuracy = (chosen > rejected).float().mean().item()
    assert accuracy == pytest.approx(trl_metrics["rewards/accuracies"])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_equals_trl_cpo_on_random_tensors(label_smoothing: float) -> None:
    from trl.experimental.cpo import CPOTrainer

    g = torch.Generator().manual_seed(3)
    chosen, rejected = -torch.rand(16, generator=g) * 200, -torch.rand(16, generator=g) * 200
    chosen_lengths, rejected_lengths = (
        torch.randint(1, 90, (16,), generator=g),
        torch.randint(1, 90, (16,), generator=g),
    )
    cpo = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=0.7,
        beta=2.0,
        label_smoothing=label_smoothing,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    # CPOTrainer scores SimPO on mean per-token log-probs.
    expected = CPOTrainer.cpo_loss(cpo, chosen / chosen_lengths, rejected / rejected_lengths)
    actual = preference_loss(
        chosen,
        rejected,
        None,
        None,
        beta=2.0,
        loss_type="simpo",
        gamma=0.7,
        label_smoothing=label_smoothing,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )
    for ours, theirs in zip(actual, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_cdpo_is_the_smoothed_sigmoid() -> None:
    g = torch.Generator().manual_seed(4)
    policy = -torch.rand(2, 32, generator=g) * 50
    reference = -torch.rand(2, 32, generator=g) * 50
    delta = (policy[0] - reference[0]) - (policy[1] - reference[1])
    losses, _, _ = preference_loss(*policy, *reference, beta=0.3, label_smoothing=0.15)
    expected = -0.85 * F.logsigmoid(0.3 * delta) - 0.15 * F.logsigmoid(-0.3 * delta)
    torch.testing.assert_close(losses, expected)


def test_every_loss_type_has_a_gradient() -> None:
    policy = torch.tensor([-10.0, -8.0], requires_grad=True), torch.tensor([-12.0, -7.0], requires_grad=True)
    lengths = {"chosen_lengths": torch.tensor([4.0, 3.0]), "rejected_lengths": torch.tensor([5.0, 2.0])}
    for loss_type in LOSS_TYPES:
        reference = (None, None) if loss_type == "simpo" else REFERENCE
        losses, _, _ = preference_loss(*policy, *reference, beta=0.1, loss_type=loss_type, **lengths)
        (grad,) = torch.autograd.grad(losses.sum(), policy[0])
        assert torch.all(grad < 0), loss_type  # raising the chosen log-prob lowers every loss here


PAIRS = [
    ([5, 6, 7], [8, 9], [10, 11, 12, 13]),
    ([20], [21, 22, 23], [24]),
    ([], [30, 31], [32, 33, 34]),
]


def test_pack_pairs_layout() -> None:
    batch = pack_pairs(PAIRS, pad_token_id=0)
    assert batch.input_ids.tolist()[0] == [5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert batch.input_ids.tolist()[1] == [20, 21, 22, 23, 24, 0, 0, 0, 0]
    assert batch.position_ids.tolist()[0] == [0, 1, 2, 3, 4, 3, 4, 5, 6]  # rejected restarts after the prompt
    mask = batch.attention_mask[0, 0]
    assert mask[5].tolist() == [
        True,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
        False,
    ]  # rejected: prompt only
    assert mask[4].tolist() == [True] * 5 + [False] * 4
    assert not batch.attention_mask[1, 0, 5, :5].any() and batch.attention_mask[1, 0, 5, 5]  # padding: itself
    # The first rejected token is predicted from the prompt's last position, not from the chosen's.
    assert batch.source_index[:2].tolist() == [2, 3] and batch.source_index[2].item() == 2
    # Without a prompt, the first token of each completion has nothing to be predicted from.
    assert batch.chosen_lengths.tolist() == [2, 3, 1] and batch.rejected_lengths.tolist() == [4, 1, 2]
    assert batch.num_tokens == (2 * 3 + 2 + 4) + (2 + 3 + 1) + (2 + 3)
    with pytest.raises(ValueError, match="empty completion"):
        pack_pairs([([1], [], [2])], pad_token_id=0)


def _plain_logps(model, prompt: list[int], completion: list[int]) -> float:
    """Sum of log p(token | everything before it) over the completion, from the model's own full forward."""
    ids = torch.tensor([prompt + completion])
    logps = model(ids).logits.log_softmax(-1)[0]
    return sum(logps[t - 1, ids[0, t]].item() for t in range(max(len(prompt), 1), ids.shape[1]))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_pair_logps_equal_separate_forwards(tiny_model, attention: str) -> None:
    tiny_model.config._attn_implementation = attention
    try:
        with torch.no_grad():
            chosen, rejected = pair_logps(tiny_model, pack_pairs(PAIRS, pad_token_id=0))
            for i, (prompt, c, r) in enumerate(PAIRS):
                assert chosen[i].item() == pytest.approx(_plain_logps(tiny_model, prompt, c), abs=1e-4)
                assert rejected[i].item() == pytest.approx(_plain_logps(tiny_model, prompt, r), abs=1e-4)
    finally:
        tiny_model.config._attn_implementation = "sdpa"


def test_pair_logps_gradients_equal_a_plain_head(tiny_model_dir) -> None:
    """The chunked head computes its gradient in the forward pass: it must equal autograd's."""
    from transformers import AutoModelForCausalLM

    from training import dpo

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = pack_pairs(PAIRS, pad_token_id=0)
    weights = torch.tensor([0.5, -1.0, 2.0, 1.5, -0.3, 0.7])

    def gradients(chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        original = dpo._LOGITS_PER_CHUNK
        dpo._LOGITS_PER_CHUNK = chunk * model.config.vocab_size
        try:
            logps = torch.cat(pair_logps(model, batch))
        finally:
            dpo._LOGITS_PER_CHUNK = original
        (logps * weights).sum().backward()
        return logps.detach(), [p.grad.clone() for p in model.model.layers.parameters()]

    model.lm_head.weight.requires_grad_(True)  # a trainable head takes the plain path
    plain, plain_grads = gradients(chunk=4)
    model.lm_head.weight.requires_grad_(False)  # tied: the embeddings stay frozen too
    for chunk in (4, 1000):  # several chunks, and one
        chunked, chunked_grads = gradients(chunk)
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
        for ours, theirs in zip(chunked_grads, plain_grads, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_pair_logps_refuses_flash_attention(tiny_model) -> None:
    tiny_model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="sdpa"):
            pair_logps(tiny_model, pack_pairs(PAIRS, pad_token_id=0))
    finally:
        tiny_model.config._attn_implementation = "sdpa"
