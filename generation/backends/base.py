"""What every generation backend takes and returns. No Django import: backends are pure and run in a
worker (local transformers + peft) or talk to a server (an OpenAI-compatible endpoint)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# A prompt: a user message as text, or a conversation [{"role": "system"|"user"|"assistant", "content": str}].
Prompt = str | Sequence[dict[str, Any]]
# Called after each finished prompt (or batch): (prompts done, prompts in all).
Progress = Callable[[int, int], None]
# Asked between batches; True stops the generation early (GenerationStopped).
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0: greedy (top_p and seed then do not matter). max_new_tokens: tokens of
    the answer, at most. seed: the same seed, prompts and model give the same answers (on CPU; CUDA kernels
    may differ in the last bits)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 32768:
            raise ValueError("max_new_tokens must be in [1, 32768]")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be in [0, 2]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Generation:
    """One answer: its text (special tokens removed, surrounding whitespace stripped), how many tokens it
    took, and why it ended: "stop" (end of turn / EOS) or "length" (max_new_tokens reached)."""

    text: str
    tokens: int
    finish_reason: Literal["stop", "length"]


class GenerationError(Exception):
    """A prompt could not be answered; the message names the prompt (its index) and what went wrong."""

    def __init__(self, message: str, *, prompt_index: int | None = None) -> None:
        super().__init__(message)
        self.prompt_index = prompt_index


class GenerationStopped(Exception):
    """`should_stop` asked to stop; `done` holds the answers of the prompts finished before it did."""

    def __init__(self, done: list[list[Generation]]) -> None:
        super().__init__(f"stopped after {len(done)} prompts")
        self.done = done


class Backend(Protocol):
    """A model that answers prompts. `generate` returns, for each prompt in order, `n` answers."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Generation]]: ...


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The prompt as chat messages: text becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]
