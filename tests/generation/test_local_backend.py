"""generation.backends.local on a tiny model: batched answers equal one-prompt-at-a-time answers, adapters
switch without reloading the base, seeds reproduce, n samples, finish reasons, stopping, errors.

The tiny model of tests/tiny_model.py, as initialised, answers every prompt with newlines (its small random
weights make each token predict itself), which would make any comparison of texts vacuous. `lively_model_dir`
re-draws its weights larger (std 0.3), so answers are varied token strings, and doubles the `<|im_end|>`
embedding, so about half of them end with it within 24 tokens and the rest run to the length limit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from generation.backends.base import (
    Generation,
    GenerationError,
    GenerationStopped,
    SamplingParams,
    as_messages,
)
from generation.backends.local import LocalBackend, shared_prefix_length, stop_token_ids
from tests.generation.conftest import save_random_adapter
from tests.tiny_model import NO_SYSTEM_TEMPLATE, TOPIC_WORDS

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(max_new_tokens=24)
SYSTEM = {"role": "system", "content": "Answer kindly."}


def question(i: int) -> str:
    words = [TOPIC_WORDS[(7 * i + k) % len(TOPIC_WORDS)] for k in range(3 + 5 * i)]
    return "Question: " + " ".join(words) + "?"


# Ten prompts of 12 to 70 tokens: every batch of 8 pads some of them; every third has a system message.
PROMPTS = [
    [SYSTEM, {"role": "user", "content": question(i)}] if i % 3 == 0 else question(i) for i in range(10)
]


@pytest.fixture(scope="module")
def adapter_dirs(lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {
        name: save_random_adapter(lively_model_dir, folder / name, seed=seed)
        for seed, name in enumerate(["tuned", "other"])
    }


@pytest.fixture(scope="module")
def backend(lively_model_dir: Path, adapter_dirs: dict[str, Path]) -> LocalBackend:
    loaded = LocalBackend(lively_model_dir, batch_size=8)
    loaded.load_adapter("tuned", adapter_dirs["tuned"])
    return loaded


def one_at_a_time(model_dir: Path, prompts, max_new_tokens: int, adapter_dir: Path | None = None):
    """The answers of a plain transformers loop: each prompt alone (no padding), greedy, stopping at
    `<|im_end|>`; each answer's tokens run up to and including the stop token."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    answers = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            output = model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end, pad_token_id=end
            )
        tokens = output[0, ids.shape[1] :].tolist()
        reason = "stop" if tokens[-1] == end else "length"
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        answers.append(Generation(text=text, tokens=len(tokens), finish_reason=reason))
    return answers


def firsts(answers: list[list[Generation]]) -> list[Generation]:
    assert all(len(per_prompt) == 1 for per_prompt in answers)
    return [per_prompt[0] for per_prompt in answers]


@pytest.mark.parametrize("adapter", [None, "tuned"])
def test_batched_greedy_answers_equal_one_prompt_at_a_time(
    backend: LocalBackend, lively_model_dir: Path, adapter_dirs: dict[str, Path], adapter: str | None
) -> None:
    expected = one_at_a_time(lively_model_dir, PROMPTS, 24, adapter_dirs.get(adapter))
    # The comparison means something: varied answers, some stopped, some cut at the length limit.
    assert len({a.text for a in expected}) == len(PROMPTS)
    assert {a.finish_reason for a in expected} == {"stop", "length"}
    assert firsts(backend.generate(PROMPTS, GREEDY, adapter=adapter)) == expected


def test_adapters_share_one_base_and_the_base_answers_come_back(
    lively_model_dir: Path, adapter_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    load = AutoModelForCausalLM.from_pretrained

    def counted_load(*args, **kwargs):
        loads.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counted_load)
    backend = LocalBackend(lively_model_dir, batch_size=8)
    base = backend.generate(PROMPTS, GREEDY)
    backend.load_adapter("tuned", adapter_dirs["tuned"])
    tuned = backend.generate(PROMPTS, GREEDY, adapter="tuned")
    backend.load_adapter("other", adapter_dirs["other"])
    other = backend.generate(PROMPTS, GREEDY, adapter="other")

    for answers in (tuned, other):
        assert sum(a != b for a, b in zip(answers, base, strict=True)) >= len(PROMPTS) - 1
    assert sum(a != b for a, b in zip(tuned, other, strict=True)) >= len(PROMPTS) - 1
    assert backend.generate(PROMPTS, GREEDY) == base
    assert backend.generate(PROMPTS, GREEDY, adapter="tuned") == tuned
    assert len(loads) == 1


def test_an_unknown_adapter_is_refused(backend: LocalBackend) -> None:
    with pytest.raises(GenerationError, match="no adapter named 'nope'"):
        backend.generate(PROMPTS, GREEDY, adapter="nope")


def test_sampling_with_a_seed_is_reproducible(backend: LocalBackend) -> None:
    def sample(seed: int) -> list[list[Generation]]:
        return backend.generate(
            PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
        )

    first = sample(7)
    assert sample(7) == first
    other = sample(8)
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= len(PROMPTS) // 2
    assert firsts(first) != firsts(backend.generate(PROMPTS, GREEDY))


def test_n_answers_per_prompt_in_input_order(backend: LocalBackend) -> None:
    single = firsts(backend.generate(PROMPTS, GREEDY))
    # 30 sequences in batches of 8: a prompt's copies straddle batches.
    tripled = backend.generate(PROMPTS, GREEDY, n=3)
    assert tripled == [[answer] * 3 for answer in single]

    sampled = backend.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=1), n=3)
    assert [len(per_prompt) for per_prompt in sampled] == [3] * len(PROMPTS)
    assert all(len({a.text for a in per_prompt}) > 1 for per_prompt in sampled)


def test_finish_reasons_and_token_counts(backend: LocalBackend) -> None:
    answers = firsts(backend.generate(PROMPTS, GREEDY))
    stopped = [a for a in answers if a.finish_reason == "stop"]
    cut = [a for a in answers if a.finish_reason == "length"]
    assert stopped and cut
    assert all(a.tokens == GREEDY.max_new_tokens for a in cut)
    # Stopped answers count their tokens up to the stop token, not the padding after it.
    assert all(1 <= a.tokens < GREEDY.max_new_tokens for a in stopped)
    assert len({a.tokens for a in stopped}) > 1
    assert "<|im_end|>" not in "".join(a.text for a in answers)


def test_should_stop_between_batches_keeps_the_done_prompts(lively_model_dir: Path) -> None:
    backend = LocalBackend(lively_model_dir, batch_size=4)
    progress: list[tuple[int, int]] = []
    full = backend.generate(PROMPTS, GREEDY, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(4, 10), (8, 10), (10, 10)]

    asked, progress = [], []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) == 3

    with pytest.raises(GenerationStopped) as stopped:
        backend.generate(PROMPTS, GREEDY, on_progress=lambda *p: progress.append(p), should_stop=third_time)
    assert stopped.value.done == full[:8]
    assert progress == [(4, 10), (8, 10)]

    # 12 sequences in batches of 4: a prompt is done when all three of its answers are.
    asked, progress = [], []
    full = backend.generate(PROMPTS[:4], GREEDY, n=3, on_progress=lambda *p: progress.append(p))
    assert progress == [(1, 4), (2, 4), (4, 4)]
    with pytest.raises(GenerationStopped) as stopped:
        backend.generate(PROMPTS[:4], GREEDY, n=3, should_stop=third_time)
    assert stopped.value.done == full[:2]


def test_a_prompt_too_long_for_the_context_is_refused_before_any_generation(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = "Question: " + " ".join(TOPIC_WORDS * 10)
    text = backend.tokenizer.apply_chat_template(
        as_messages(long), add_generation_prompt=True, tokenize=False
    )
    length = len(backend.tokenizer(text, add_special_tokens=False).input_ids)
    assert backend.context_length == 512 and length < 512
    fits = SamplingParams(max_new_tokens=512 - length)
    assert len(backend.generate([long], fits)) == 1

    generated = []
    monkeypatch.setattr(backend.model, "generate", lambda **kwargs: generated.append(kwargs))
    too_many = SamplingParams(max_new_tokens=513 - length)
    with pytest.raises(GenerationError, match=f"prompt 2 has {length} tokens") as refused:
        backend.generate([PROMPTS[0], PROMPTS[1], long, PROMPTS[2]], too_many)
    assert refused.value.prompt_index == 2
    assert generated == []


def test_a_chat_template_error_names_the_prompt(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend.tokenizer, "chat_template", NO_SYSTEM_TEMPLATE)
    with pytest.raises(GenerationError, match="prompt 3: the chat template failed") as refused:
        backend.generate(PROMPTS[1:3] + [PROMPTS[1], PROMPTS[0]], GREEDY)
    assert refused.value.prompt_index == 3


def test_without_a_chat_template_the_messages_are_plain_text(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend.tokenizer, "chat_template", None)
    plain = backend.generate([PROMPTS[0], question(0)], GREEDY)
    expected = backend.generate([f"Answer kindly.\n\n{question(0)}", question(0)], GREEDY)
    assert plain == expected


def test_stop_tokens_gather_the_config_the_tokenizer_and_the_end_of_turn(lively_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    end, eos, bos = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|eos|>", "<|bos|>"])
    assert stop_token_ids(tokenizer, GenerationConfig()) == [end]
    # A tokenizer whose EOS is not the template's end of turn, and a config listing another id.
    tokenizer.eos_token = "<|eos|>"
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[bos, eos])) == [bos, eos, end]


def test_the_local_backend_imports_no_django() -> None:
    code = (
        "import sys; import generation.backends.local; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PATH": "/usr/bin:/bin"})


def test_choice_probabilities_batched_equal_one_prompt_at_a_time(
    backend: LocalBackend, lively_model_dir: Path, adapter_dirs: dict[str, Path]
) -> None:
    """A judge's verdict probabilities: the next-token distribution after each prompt, over the options'
    first tokens, renormalized; a padded batch gives what each prompt alone gives."""
    options = ["A", "B", "tie"]
    probabilities = backend.choice_probabilities(PROMPTS, options)
    assert probabilities.shape == (len(PROMPTS), 3)
    assert abs(probabilities.sum(1) - 1).max() < 1e-6 and (probabilities >= 0).all()
    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir).eval()
    firsts = [tokenizer(o, add_special_tokens=False).input_ids[0] for o in options]
    for i, prompt in enumerate(PROMPTS):
        text = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            logits = model(ids).logits[0, -1, firsts]
        assert torch.allclose(torch.softmax(logits, -1), torch.tensor(probabilities[i]).float(), atol=1e-4)
    tuned = backend.choice_probabilities(PROMPTS, options, adapter="tuned")
    assert abs(tuned - probabilities).max() > 1e-3  # the adapter judges differently
    with pytest.raises(ValueError, match="must start with different tokens"):
        backend.choice_probabilities(PROMPTS[:1], ["A", "A"])


def judging_prompts() -> list:
    """Judging prompts of 8 pairs in both orders (evaluation.judges, with a rubric and criteria): every
    prompt starts with the same long head, and their own tails differ in length."""
    from evaluation.judges import judge_messages

    def answer(i: int, size: int) -> str:
        return " ".join(TOPIC_WORDS[(5 * i + k) % len(TOPIC_WORDS)] for k in range(size)) + "."

    context = {
        "rubric": "Prefer the correct answer; then the clear one. " * 3,
        "criteria": [
            {"name": "Correctness", "question": "Which is true?"},
            {"name": "Tone", "question": "Kind?"},
        ],
    }
    pairs = [(question(i % 4), answer(i, 2 + 3 * i), answer(i + 1, 1 + (5 * i) % 7)) for i in range(8)]
    return [judge_messages(prompt=q, first=a, second=b, **context) for q, a, b in pairs] + [
        judge_messages(prompt=q, first=b, second=a, **context) for q, a, b in pairs
    ]


@pytest.mark.parametrize("adapter", [None, "tuned"])
def test_choice_probabilities_with_a_shared_prefix_equal_each_prompt_alone(
    lively_model_dir: Path, adapter_dirs: dict[str, Path], adapter: str | None
) -> None:
    """The shared head is run once and the tails, left-padded in batches of 5 (longest first), against it:
    each row equals a plain forward pass over its whole prompt alone, to 1e-5, with and without an adapter."""
    options = ["A", "B", "tie"]
    prompts = judging_prompts()
    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dirs[adapter])
    firsts = [tokenizer(o, add_special_tokens=False).input_ids[0] for o in options]
    encoded, expected = [], []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
        encoded.append(tokenizer(text, add_special_tokens=False).input_ids)
        with torch.inference_mode():
            logits = model(torch.tensor([encoded[-1]])).logits[0, -1, firsts]
        expected.append(torch.softmax(logits, -1).tolist())
    # The comparison means something: a long shared head, tails of many lengths, verdicts that differ.
    lengths = sorted((len(ids) for ids in encoded), reverse=True)
    assert shared_prefix_length(encoded) > 60 and lengths[0] - lengths[-1] > 20
    assert all(len(set(lengths[i : i + 5])) > 1 for i in range(0, 15, 5))  # every batch of 5 is padded
    assert abs(np.array(expected) - np.array(expected).mean(0)).max() > 0.05

    backend = LocalBackend(lively_model_dir, batch_size=5)
    if adapter is not None:
        backend.load_adapter(adapter, adapter_dirs[adapter])
    for size in (5, 1, len(prompts)):
        backend.batch_size = size
        got = backend.choice_probabilities(prompts, options, adapter=adapter)
        assert abs(got - np.array(expected)).max() < 1e-5, size
    # Prompts sharing only the chat template's head, among them one a left-padded batch of differing lengths.
    backend.batch_size = 4
    mixed = [prompts[0], *PROMPTS[:5]]
    alone = np.concatenate([backend.choice_probabilities([p], options, adapter=adapter) for p in mixed])
    assert abs(backend.choice_probabilities(mixed, options, adapter=adapter) - alone).max() < 1e-5


def test_choice_probabilities_report_progress_and_stop_between_batches(lively_model_dir: Path) -> None:
    backend = LocalBackend(lively_model_dir, batch_size=4)
    progress: list[tuple[int, int]] = []
    backend.choice_probabilities(PROMPTS, ["A", "B"], on_progress=lambda *p: progress.append(p))
    assert progress == [(4, 10), (8, 10), (10, 10)]
    asked, progress = [], []
    with pytest.raises(GenerationStopped) as stopped:
        backend.choice_probabilities(
            PROMPTS,
            ["A", "B"],
            on_progress=lambda *p: progress.append(p),
            should_stop=lambda: asked.append(1) or len(asked) == 2,
        )
    assert stopped.value.done == [] and progress == [(4, 10)]


def test_shared_prefix_length_leaves_every_row_a_token_of_its_own() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 1
    assert shared_prefix_length([[5], [5, 6]]) == 0
    assert shared_prefix_length([[7, 8, 9]]) == 2
