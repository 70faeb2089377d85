"""The local generation backend: a Hugging Face causal LM and its LoRA adapters, answering in this process.

No Django. It imports torch, transformers and peft: import it in a worker, never in the web process.

One base model in memory serves the base and every adapter loaded onto it: peft keeps the adapters' small LoRA
matrices beside the shared base weights, `set_adapter` picks one, `disable_adapter()` answers as the base.
Prompts are rendered with the tokenizer's chat template and answered in batches of at most `batch_size`
sequences, left-padded with an attention mask (transformers derives the position ids from the mask), with
the KV cache, under `torch.inference_mode`. Greedy answers equal those of one prompt at a time without
padding (tests/generation/test_local_backend.py): batching changes the speed, not the text. A judge's verdicts
(`choice_probabilities`) run the head that all its prompts share once, and only the rest of each prompt in
batches (bench/judge.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jinja2 import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer, Cache, DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

from generation.backends.base import (
    Generation,
    GenerationError,
    GenerationStopped,
    Progress,
    Prompt,
    SamplingParams,
    ShouldStop,
    as_messages,
)

# An assistant message rendered with the chat template shows which token closes a turn (the text after it).
_TURN_MARKER = "Z9q-end-of-answer-marker"


class LocalBackend:
    """A base model from `base_path` (a `from_pretrained` folder), with the adapters given to `load_adapter`.

    device: "cuda" when available, else "cpu". dtype: bfloat16 on CUDA, float32 on CPU. batch_size: sequences
    generated together, at most (with `n` answers per prompt, each answer is one sequence); it bounds the
    memory: the KV cache holds batch_size x (longest prompt + max_new_tokens) positions per layer.
    Not thread-safe: one `generate` at a time.
    """

    def __init__(
        self,
        base_path: str | Path,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model: Any = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype).to(self.device).eval()
        self.stop_token_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        # Positions the model was trained on: prompt + answer must fit (None: the config does not say).
        self.context_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.adapters: dict[str, Path] = {}

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the peft adapter saved in `path` as `name`, beside the base and the adapters loaded before."""
        from peft import PeftModel

        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.to(self.device).eval()
        self.adapters[name] = Path(path)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        adapter: str | None = None,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Generation]]:
        """For each prompt, in order, `n` answers by the base model (`adapter` None) or the adapter so named.

        Every prompt is checked (chat template, length) before anything is generated: `GenerationError` names
        the first bad one. The prompts' n copies are generated in input order, `batch_size` sequences at a
        time; after each batch `on_progress(prompts done, prompts in all)`, and before each `should_stop()`:
        True raises `GenerationStopped` with the answers of the prompts finished so far (a prefix of
        `prompts`). A seed is applied once, with `torch.manual_seed`, before the first batch.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        selected = self._select(adapter)
        encoded = [self._encode(i, prompt, params.max_new_tokens) for i, prompt in enumerate(prompts)]
        config = self._generation_config(params)
        # Input order, not sorted by length: the prompts done when `should_stop` fires must be a prefix, as
        # `GenerationStopped.done` promises. Each row is one sequence: prompt i, n times over.
        rows = [i for i in range(len(prompts)) for _ in range(n)]
        answers: list[list[Generation]] = [[] for _ in prompts]
        done = 0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with selected, torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                if should_stop is not None and should_stop():
                    raise GenerationStopped(answers[:done])
                batch = rows[start : start + self.batch_size]
                for i, answer in zip(
                    batch, self._generate_batch([encoded[i] for i in batch], config), strict=True
                ):
                    answers[i].append(answer)
                done = (start + len(batch)) // n
                if on_progress is not None:
                    on_progress(done, len(prompts))
        return answers

    def choice_probabilities(
        self,
        prompts: Sequence[Prompt],
        options: Sequence[str],
        *,
        adapter: str | None = None,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> np.ndarray:
        """For each prompt, the model's probabilities of answering with each of `options` (e.g. "A", "B",
        "tie"): shape (len(prompts), len(options)), rows summing to 1. Read from the next-token
        distribution after the prompt (chat template with its generation prompt): each option's first
        token's probability, renormalized over the options (so a verdict needs no parsing of free text).

        The tokens that all the prompts start with (a judge's instructions, rubric and criteria) are run
        once, and their keys and values shared by every row; the rest of each prompt runs against them, in
        one forward pass per `batch_size` prompts, longest first (less padding; an out-of-memory error comes
        with the first batch). The result equals scoring each prompt alone, to float rounding
        (tests/generation/test_local_backend.py). After each batch `on_progress(prompts done, prompts in
        all)`; before each `should_stop()`: True raises GenerationStopped with `done` empty (the rows come
        back together, in input order). ValueError when two options start with the same token;
        GenerationError names a bad prompt."""
        firsts = []
        for option in options:
            ids = self.tokenizer(option, add_special_tokens=False).input_ids
            if not ids:
                raise ValueError(f"option {option!r} encodes to no token")
            firsts.append(ids[0])
        if len(set(firsts)) != len(firsts):
            raise ValueError(f"options {list(options)} must start with different tokens")
        selected = self._select(adapter)
        encoded = [self._encode(i, prompt, 1) for i, prompt in enumerate(prompts)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        out = np.zeros((len(prompts), len(options)))
        with selected, torch.inference_mode():
            shared = shared_prefix_length(encoded) if len(encoded) > 1 else 0
            prefix = self._prefix_cache(encoded[0][:shared]) if shared else None
            if prefix is None:
                shared = 0
            for start in range(0, len(order), self.batch_size):
                if should_stop is not None and should_stop():
                    raise GenerationStopped([])
                batch = order[start : start + self.batch_size]
                logits = self._last_logits([encoded[i][shared:] for i in batch], prefix)
                picked = torch.log_softmax(logits, dim=-1)[:, firsts]
                out[batch] = torch.softmax(picked, dim=-1).cpu().numpy()
                if on_progress is not None:
                    on_progress(start + len(batch), len(encoded))
        return out

    def _prefix_cache(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Every layer's (keys, values) for the token ids `ids`, one row: (1, kv heads, len(ids), head size).

        None for a model whose cache is not plain full attention (sliding-window or linear-attention layers
        keep other state than these tensors): its prompts run whole."""
        input_ids = torch.tensor([ids], device=self.device)
        cache = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1).cache
        if not isinstance(cache, DynamicCache) or any(cache.is_sliding + cache.is_linear + cache.is_dummy):
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _last_logits(
        self, rows: list[list[int]], prefix: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> torch.Tensor:
        """The next-token logits after each of `rows` (token ids that follow `prefix`, the `_prefix_cache`
        of tokens every row starts with, or whole prompts when None): (len(rows), vocabulary), float32.

        One forward pass. Rows are left-padded to the longest, so that the last position is every row's
        own, and only its logits are computed (the full (rows, length, vocabulary) tensor is gigabytes). The
        pads sit between the prefix and the row, masked out; the position ids count each row's own tokens
        only, so every token has the position it has in its prompt alone.
        """
        width = max(len(row) for row in rows)
        shared = prefix[0][0].shape[2] if prefix is not None else 0
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for r, row in enumerate(rows):
            input_ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, shared + width - len(row) :] = 1
        # A pad takes its left neighbour's position (or 0); it is masked out as a key, its output unused.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        cache = (
            None if prefix is None else Cache(layers=[_SharedPrefix(keys, values) for keys, values in prefix])
        )
        output = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=cache is not None,
            logits_to_keep=1,
        )
        return output.logits[:, -1, :].float()

    def _select(self, adapter: str | None) -> contextlib.AbstractContextManager:
        """Make `adapter` (None: the base model) the one that answers; a context to generate within."""
        if adapter is None:
            return self.model.disable_adapter() if self.adapters else contextlib.nullcontext()
        if adapter not in self.adapters:
            loaded = ", ".join(sorted(self.adapters)) or "none"
            raise GenerationError(f"no adapter named {adapter!r} is loaded (loaded: {loaded})")
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _encode(self, index: int, prompt: Prompt, max_new_tokens: int) -> list[int]:
        """The token ids of prompt `index` rendered for an answer; `GenerationError` if it cannot be answered.

        With a chat template: its text with the generation prompt, encoded without adding special tokens (the
        template writes any BOS itself). Without one: the messages' contents, a blank line apart, encoded as
        the tokenizer encodes plain text.
        """
        messages = as_messages(prompt)
        if self.tokenizer.chat_template:
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except (TemplateError, KeyError, TypeError, ValueError) as error:
                raise GenerationError(
                    f"prompt {index}: the chat template failed: {error}", prompt_index=index
                ) from error
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer("\n\n".join(str(m["content"]) for m in messages)).input_ids
        if not ids:
            raise GenerationError(f"prompt {index} is empty", prompt_index=index)
        if self.context_length is not None and len(ids) + max_new_tokens > self.context_length:
            raise GenerationError(
                f"prompt {index} has {len(ids)} tokens: with max_new_tokens {max_new_tokens} it exceeds the "
                f"model's context of {self.context_length} tokens",
                prompt_index=index,
            )
        return ids

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        # top_k 0 turns off transformers' default top-k of 50: sampling is by temperature and top_p alone.
        # Settings left unset here (a repetition penalty, say) come from the model's generation_config.json.
        sampling = (
            {"do_sample": False}
            if params.greedy
            else {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        )
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            num_beams=1,
            use_cache=True,
            **sampling,
        )

    def _generate_batch(self, rows: list[list[int]], config: GenerationConfig) -> list[Generation]:
        """Answer `rows` (token ids of rendered prompts) in one left-padded `generate` call."""
        inputs = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        # (len(rows), padded prompt length + answer length): answers that stop early are padded after it.
        output = self.model.generate(**inputs, generation_config=config)
        stops = set(self.stop_token_ids)
        answers = []
        for tokens in output[:, inputs["input_ids"].shape[1] :].tolist():
            end = next((k for k, token in enumerate(tokens) if token in stops), None)
            if end is not None:
                tokens, reason = tokens[: end + 1], "stop"
            else:
                reason = "length"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            answers.append(Generation(text=text, tokens=len(tokens), finish_reason=reason))
        return answers


class _SharedPrefix(DynamicLayer):
    """One layer's keys and values of a prefix (one row: (1, kv heads, length, head size)) that every row of a
    batch continues. `update` returns them repeated for the batch's rows, followed by the rows' own, and keeps
    nothing: one forward pass reads the cache and none follows, so each layer's copy is freed as soon as its
    attention is done (a DynamicCache would hold every layer's, batch x prompt length, to the end)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.device, self.is_initialized = keys, values, keys.device, True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        keys = torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2)
        return keys, values


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading token ids all of `rows` (at least one) have in common, leaving every row at least
    its last token of its own (the position whose logits are read)."""
    first, shortest = rows[0], min(len(row) for row in rows)
    length = 0
    while length < shortest - 1 and all(row[length] == first[length] for row in rows):
        length += 1
    return length


def stop_token_ids(tokenizer: Any, generation_config: GenerationConfig) -> list[int]:
    """The token ids that end an answer: the generation config's EOS (one id or several), the tokenizer's
    EOS, and the special token the chat template writes after an assistant turn (`<|im_end|>`, `<|eot_id|>`,
    `<end_of_turn>`), which some models do not list as their EOS."""
    configured = generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    ids += [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(i for i in ids if i is not None))


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token right after an assistant message in the chat template's rendering, or None."""
    if not tokenizer.chat_template:
        return None
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _TURN_MARKER}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except (TemplateError, KeyError, TypeError, ValueError):
        return None
    if _TURN_MARKER not in text:
        return None
    after = tokenizer(text.split(_TURN_MARKER, 1)[1], add_special_tokens=False).input_ids
    added = tokenizer.added_tokens_decoder
    if after and after[0] in added and added[after[0]].special:
        return after[0]
    return None
