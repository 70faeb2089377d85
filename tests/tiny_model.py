"""A tiny Llama-style causal LM and its tokenizer, built from scratch in about a second: no download.

`build_tiny_model(path)` trains a byte-level BPE tokenizer (vocabulary 512) on generated sentences, wraps it
with a ChatML chat template, initialises a 2-layer `LlamaForCausalLM` (hidden size 64) from a fixed seed and
saves both with `save_pretrained`, so tests load them through the real `from_pretrained` path. Any test folder
can import it; the training tests build it once per session (tests/training/conftest.py).
"""

from __future__ import annotations

import random
from pathlib import Path


def _words(text: str) -> list[str]:
    return text.split()


# Two word families: the synthetic preference data prefers answers made of the first over the second.
GOOD_WORDS = _words("bright clear careful correct gentle helpful honest kind precise true")
BAD_WORDS = _words("angry broken cold dull false harsh lazy muddled rude sloppy")
TOPIC_WORDS = _words(
    "apple river model answer question data train loss reward policy token context prompt response explain "
    "why how example python function value error result note step check sky tree stone music number color "
    "house city road light water paper window garden letter"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    """`n` words drawn from `words`, capitalised, with a full stop."""
    text = " ".join(rng.choice(words) for _ in range(n))
    return text[0].upper() + text[1:] + "."


def corpus(seed: int = 0, size: int = 400) -> list[str]:
    """Sentences covering every word the tests use, plus chat role names."""
    rng = random.Random(seed)
    vocab = GOOD_WORDS + BAD_WORDS + TOPIC_WORDS + ["system", "user", "assistant", "Question", "Answer"]
    return [sentence(rng, vocab, rng.randint(4, 14)) for _ in range(size)]


def build_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny tokenizer and `LlamaForCausalLM` to `path` (created) and return `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|eos|>", "<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def preference_rows(n: int, *, seed: int, conversational: bool = True) -> list[dict]:
    """`n` TRL preference rows with a learnable preference: chosen answers use GOOD_WORDS, rejected BAD_WORDS.

    Conversational rows carry a system and a user message; standard rows plain strings.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = "Question: " + sentence(rng, TOPIC_WORDS, rng.randint(3, 10))
        chosen = sentence(rng, GOOD_WORDS, rng.randint(2, 7))
        rejected = sentence(rng, BAD_WORDS, rng.randint(2, 7))
        if conversational:
            prompt = [{"role": "system", "content": "Answer kindly."}, {"role": "user", "content": question}]
            row = {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        else:
            row = {"prompt": question + "\nAnswer:", "chosen": " " + chosen, "rejected": " " + rejected}
        rows.append({"id": f"s{seed}-{i}", **row})
    return rows


# Chat templates of other model families, written in the tiny tokenizer's ChatML tokens.
# A reasoning model's template (DeepSeek-R1-Distill style): assistant turns lose everything up to `</think>`;
# `think_prompt` also opens the reasoning in the generation prompt, as the newer R1 templates do.
def think_template(*, think_prompt: bool = False) -> str:
    opening = "<think>\n" if think_prompt else ""
    return (
        "{% for message in messages %}{% set content = message['content'] %}"
        "{% if message['role'] == 'assistant' and '</think>' in content %}"
        "{% set content = content.split('</think>')[-1] | trim %}{% endif %}"
        "<|im_start|>{{ message['role'] }}\n{{ content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n" + opening + "{% endif %}"
    )


# A template that refuses system turns (Gemma style).
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_variant(
    model_dir: Path, path: Path, *, chat_template: str | None = None, add_bos: bool = False
):
    """The tiny tokenizer with another chat template, or adding `<|bos|>` to every text it encodes (as Llama
    3's does), saved to `path` and loaded back through `AutoTokenizer`."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if add_bos:
        bos = tokenizer.bos_token_id
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)]
        )
    tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)
