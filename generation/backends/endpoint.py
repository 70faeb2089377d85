"""Answers from an OpenAI-compatible chat-completions server: vLLM (`vllm serve BASE --enable-lora
--lora-modules NAME=PATH`, then `model=NAME`), SGLang, or a hosted API. No Django import.

Retries are ours, not the `openai` client's (its own are off): 408, 429, 5xx, timeouts and connection
errors are tried again, up to `max_retries` times, after the server's `Retry-After` when it sends one,
otherwise after an exponential backoff with jitter; any other 4xx fails at once. Every failure becomes a
`GenerationError` that names the prompt, the HTTP status and the server's own message.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import openai

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

# A rough token count where the server reports no usage: about four characters a token in English.
CHARS_PER_TOKEN = 4


class EndpointBackend:
    """A `Backend` over HTTP. `base_url` is the API root, usually ending in /v1
    (`http://gpu-box:8000/v1`); `model` is the served name (a vLLM LoRA module's NAME picks the adapter).
    `api_key`: None for servers that take none. `concurrency`: prompts in flight at once. `timeout`: seconds
    for one request; a non-streamed answer arrives whole, so it must cover the whole generation.
    `max_retries`: further tries of a request after a retryable failure. `backoff`: seconds before the
    first retry, doubled each time (with jitter), at most `max_backoff`, which also caps `Retry-After`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self.base_url = base_url
        self.model = model
        self.has_api_key = bool(api_key)
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        # "EMPTY": vLLM's convention for "no key"; the client refuses to start without one.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> EndpointBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> list[str]:
        """The ids of the models the server serves (GET /models), tried once: a connection test."""
        try:
            return [m.id for m in self._client.models.list().data]
        except openai.APIError as error:
            raise GenerationError(f"listing the models: {self._describe(error)}") from error

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Generation]]:
        """`n` answers for each prompt, in the order of the prompts. Prompts start in order, at most
        `concurrency` at once; `should_stop` is asked before each one starts, and `on_progress` is told
        after each one finishes, both on the calling thread. On a stop or a failure no further prompt
        starts and the running ones are awaited, so `GenerationStopped.done` holds the answers of every
        prompt started (the leading prompts, in order). A failure raises the `GenerationError` of the
        first prompt (by index) that failed."""
        if n < 1:
            raise ValueError("n must be at least 1")
        failures: dict[int, GenerationError] = {}
        answers: dict[int, list[Generation]] = {}
        stopped = False
        started = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint") as pool:
            running: dict[Future[list[Generation]], int] = {}
            while True:
                while (
                    not (stopped or failures) and started < len(prompts) and len(running) < self.concurrency
                ):
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                    future = pool.submit(self._answer, started, prompts[started], params, n)
                    running[future] = started
                    started += 1
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    try:
                        answers[index] = future.result()
                    except GenerationError as error:
                        failures[index] = error
                    else:
                        if on_progress is not None:
                            on_progress(len(answers), len(prompts))
        if failures:
            raise failures[min(failures)]
        results = [answers[i] for i in range(started)]
        if stopped:
            raise GenerationStopped(results)
        return results

    def _answer(self, index: int, prompt: Prompt, params: SamplingParams, n: int) -> list[Generation]:
        """`n` answers to one prompt. A server that returns fewer choices than asked for (some ignore `n`)
        is asked again for the rest; each further request moves the seed on by the answers already had,
        so a seeded run does not get the same answer again."""
        messages = as_messages(prompt)
        answers: list[Generation] = []
        while len(answers) < n:
            wanted = n - len(answers)
            seed = None if params.seed is None else params.seed + len(answers)
            request: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "n": wanted,
            }
            if seed is not None:
                request["seed"] = seed
            completion = self._create(index, prompt, request)
            if not completion.choices:
                raise GenerationError(
                    f"{_name(index, prompt)}: the server returned no answer", prompt_index=index
                )
            answers.extend(_generations(completion)[:wanted])
        return answers

    def _create(self, index: int, prompt: Prompt, request: dict[str, Any]) -> Any:
        """One chat completion, with our retries."""
        for attempt in range(1, self.max_retries + 2):
            try:
                return self._client.chat.completions.create(**request)
            except openai.APIError as error:
                failure = error
            if isinstance(failure, openai.APIStatusError):
                retryable = _retryable(failure.status_code)
                wait_s = _retry_after(failure.response.headers)
            else:  # a connection error or timeout is worth another try, an unreadable answer is not
                retryable, wait_s = isinstance(failure, openai.APIConnectionError), None
            if not retryable or attempt > self.max_retries:
                tries = f"; gave up after {attempt} {'try' if attempt == 1 else 'tries'}" if retryable else ""
                message = f"{_name(index, prompt)}: {self._describe(failure)}{tries}"
                raise GenerationError(message, prompt_index=index) from failure
            time.sleep(self._wait(attempt, wait_s))
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        ceiling = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _describe(self, error: openai.APIError) -> str:
        """What went wrong, in words a person setting up the endpoint can act on."""
        if isinstance(error, openai.APITimeoutError):
            return f"no answer from {self.base_url} within {self.timeout:g} s (timed out)"
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            return (
                f"the endpoint cannot be reached at {self.base_url} ({cause}); "
                "is the server running, and is the base URL right?"
            )
        if not isinstance(error, openai.APIStatusError):
            return f"the server's answer could not be read: {error.message}"
        text = f"{self.base_url} answered HTTP {error.status_code}: {_server_message(error)}"
        if error.status_code == 401:
            given = (
                "the API key was refused" if self.has_api_key else "the server wants an API key, none was set"
            )
            return f"{text} ({given}; check the API key environment variable)"
        if error.status_code == 404:
            return f"{text} (is the model '{self.model}' served there? The base URL usually ends in /v1)"
        return text


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _retry_after(headers: Any) -> float | None:
    """The server's Retry-After in seconds (or the retry-after-ms some APIs send); None when absent or an
    HTTP date, which then falls back to the backoff."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _server_message(error: openai.APIStatusError) -> str:
    """The server's own words: `error.message` of the JSON body (the client has already unwrapped the
    "error" object; older vLLM puts `message` at the top level), else the start of the body as text."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body:
        return " ".join(body.split())[:200]  # a proxy's HTML error page, say
    return "(no message)"


def _name(index: int, prompt: Prompt) -> str:
    """The prompt as an error message names it: its index and its first 60 characters (of the last user
    message, for a conversation)."""
    if isinstance(prompt, str):
        text = prompt
    else:
        users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
        text = str(users[-1] if users else (prompt[-1].get("content", "") if prompt else ""))
    text = " ".join(text.split())
    return f'prompt {index} ("{text[:60]}…")' if len(text) > 60 else f'prompt {index} ("{text}")'


def _generations(completion: Any) -> list[Generation]:
    """The choices as Generations. Servers report completion tokens for all choices together: one choice
    gets them all; several share them in proportion to their length in characters. Without usage, a rough
    count (CHARS_PER_TOKEN)."""
    texts = [c.message.content or "" for c in completion.choices]
    usage = getattr(completion, "usage", None)
    if usage is not None and usage.completion_tokens is not None:
        tokens = _shares(usage.completion_tokens, [len(t) for t in texts])
    else:
        tokens = [math.ceil(len(t.strip()) / CHARS_PER_TOKEN) for t in texts]
    return [
        Generation(text.strip(), count, "length" if choice.finish_reason == "length" else "stop")
        for choice, text, count in zip(completion.choices, texts, tokens, strict=True)
    ]


def _shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (equally when all are 0), in whole numbers summing to it:
    largest remainders get the leftover units."""
    if sum(weights) == 0:
        weights = [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
