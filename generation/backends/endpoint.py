"""Answers from an OpenAI-compatible chat-completions server: vLLM (`vllm serve BASE --enable-lora
--lora-modules NAME=PATH`, then `model=NAME`), SGLang, or a hosted API. No Django import.

Retries are ours, not the `openai` client's (its own are off): 408, 429, 5xx, timeouts and connection
errors are tried again, up to `max_retries` times, after the server's `Retry-After` when it sends one,
otherwise after an exponential backoff with jitter; any other 4xx fails at once. Every failure becomes a
`GenerationError` that names the prompt, the HTTP status and the server's own message.

As a pairwise judge (`choice_probabilities`), the verdict's probabilities come from the log-probabilities of
the answer's first token where the server sends them (vLLM, SGLang, OpenAI); otherwise from a strict reading
of the whole answer, which must be one of the options and nothing more. An answer that cannot be read is a
row of NaN, never a guess.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
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
# A verdict's length, at most: enough for "tie" and a period, or "Answer: tie".
JUDGE_MAX_TOKENS = 8
# Alternatives for the first token of a verdict; 20 is the most OpenAI and vLLM (by default) give.
JUDGE_TOP_LOGPROBS = 20
# Characters of an answer kept beside its verdict, for a person to read why it could not be read.
JUDGE_TEXT_CHARS = 200
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_ANSWER_LABEL = re.compile(r"^answer\s*:", re.IGNORECASE)

T = TypeVar("T")
ReadMethod = Literal["logprobs", "parsed", "unparseable"]


@dataclass(frozen=True)
class ChoiceReadings:
    """Verdicts and how each was read. `probabilities`: shape (prompts, options), each row summing to 1, or
    all NaN where the answer could not be read. For row i, `methods[i]`: "logprobs" (from the first
    token's log-probabilities), "parsed" (the answer is exactly one option: a one-hot row) or "unparseable"
    (a NaN row); `texts[i]`: the answer, its first 200 characters."""

    probabilities: np.ndarray
    methods: list[ReadMethod]
    texts: list[str]


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
        # Set when the server refused `logprobs` with HTTP 400 and took the request without: not asked again.
        self.logprobs_refused = False
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
        answers, stopped = self._each_prompt(
            prompts, lambda i, prompt: self._answer(i, prompt, params, n), on_progress, should_stop
        )
        if stopped:
            raise GenerationStopped(answers)
        return answers

    def choice_probabilities(
        self,
        prompts: Sequence[Prompt],
        options: Sequence[str],
        *,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> np.ndarray:
        """For each prompt, the probabilities of answering with each of `options` (e.g. "A", "B", "tie"):
        shape (len(prompts), len(options)), rows summing to 1, or a row of NaN where the answer could not be
        read. `choice_probabilities_detailed` says how each row was read; errors and stopping as there."""
        return self.choice_probabilities_detailed(
            prompts, options, on_progress=on_progress, should_stop=should_stop
        ).probabilities

    def choice_probabilities_detailed(
        self,
        prompts: Sequence[Prompt],
        options: Sequence[str],
        *,
        on_progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> ChoiceReadings:
        """The verdicts on `prompts`, each one greedy chat completion of at most `JUDGE_MAX_TOKENS` tokens
        asked with `logprobs` and `top_logprobs` 20, and how each was read.

        With log-probabilities: an option's probability is the sum of exp(logprob) over the first token's top
        alternatives whose text, stripped of whitespace and compared case-insensitively, is the option or a
        non-empty prefix of it ("t", " Tie" for "tie"); a token that is a prefix of two options counts for
        neither. The sums are renormalized over the options ("logprobs"). Where none of the options is among
        the top tokens, or the server sends no log-probabilities, the whole answer, stripped of whitespace,
        quotes, a trailing period and a leading "Answer:", must equal one option (case-insensitively): a
        one-hot row ("parsed"); anything else is a row of NaN ("unparseable"), never an option picked out of a
        sentence. A server that answers HTTP 400 to a request with `logprobs` is asked once more without; if
        that succeeds, `logprobs_refused` is set and no later request asks for them.

        Prompts run as in `generate` (in order, `concurrency` at once, `on_progress` after each). ValueError
        when an option is empty or two are equal ignoring case; `GenerationError` for the first prompt (by
        index) that failed; `GenerationStopped` (its `done` empty) when `should_stop` asks, once the running
        prompts are done."""
        keys = [option.strip().lower() for option in options]
        if not all(keys) or len(set(keys)) != len(keys):
            raise ValueError(f"options {list(options)} must be non-empty and differ ignoring case")
        rows, stopped = self._each_prompt(
            prompts, lambda i, prompt: self._verdict(i, prompt, keys), on_progress, should_stop
        )
        if stopped:
            raise GenerationStopped([])
        probabilities = np.array([row for row, _, _ in rows], dtype=float).reshape(len(rows), len(keys))
        return ChoiceReadings(probabilities, [m for _, m, _ in rows], [t for _, _, t in rows])

    def _each_prompt(
        self,
        prompts: Sequence[Prompt],
        answer: Callable[[int, Prompt], T],
        on_progress: Progress | None,
        should_stop: ShouldStop | None,
    ) -> tuple[list[T], bool]:
        """`answer(index, prompt)` for each prompt on a pool of `concurrency` threads: prompts start in order,
        `should_stop` is asked before each one starts, and `on_progress` is told after each one finishes,
        both on the calling thread. On a stop or a failure no further prompt starts and the running ones are
        awaited. Returns the answers of every prompt started (the leading prompts, in order) and whether
        `should_stop` stopped it; raises the `GenerationError` of the first prompt (by index) that failed."""
        failures: dict[int, GenerationError] = {}
        answers: dict[int, T] = {}
        stopped = False
        started = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint") as pool:
            running: dict[Future[T], int] = {}
            while True:
                while (
                    not (stopped or failures) and started < len(prompts) and len(running) < self.concurrency
                ):
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                    future = pool.submit(answer, started, prompts[started])
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
        return [answers[i] for i in range(started)], stopped

    def _verdict(self, index: int, prompt: Prompt, keys: list[str]) -> tuple[list[float], ReadMethod, str]:
        """One prompt's verdict over the options `keys` (stripped, lower case): (row, method, answer text)."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": as_messages(prompt),
            "max_tokens": JUDGE_MAX_TOKENS,
            "temperature": 0.0,
        }
        if self.logprobs_refused:
            completion = self._create(index, prompt, request)
        else:
            try:
                completion = self._create(
                    index, prompt, {**request, "logprobs": True, "top_logprobs": JUDGE_TOP_LOGPROBS}
                )
            except GenerationError as error:
                if not isinstance(error.__cause__, openai.BadRequestError):
                    raise
                # Some hosted APIs refuse logprobs for some models; a 400 for another reason fails here again.
                completion = self._create(index, prompt, request)
                self.logprobs_refused = True
        if not completion.choices:
            raise GenerationError(
                f"{_name(index, prompt)}: the server returned no answer", prompt_index=index
            )
        choice = completion.choices[0]
        text = choice.message.content or ""
        row = _from_logprobs(_first_top_logprobs(choice), keys)
        if row is not None:
            return row, "logprobs", text[:JUDGE_TEXT_CHARS]
        picked = _strict_choice(text, keys)
        if picked is None:
            return [math.nan] * len(keys), "unparseable", text[:JUDGE_TEXT_CHARS]
        return [float(j == picked) for j in range(len(keys))], "parsed", text[:JUDGE_TEXT_CHARS]

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


def _first_top_logprobs(choice: Any) -> list[tuple[str, float]]:
    """The (token, logprob) alternatives for the answer's first token; empty when the server sent none."""
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) or []
    if not content:
        return []
    return [(top.token, top.logprob) for top in getattr(content[0], "top_logprobs", None) or []]


def _from_logprobs(top: list[tuple[str, float]], keys: list[str]) -> list[float] | None:
    """Each option's share of the probability of the top tokens that spell it or a prefix of it only (see
    `choice_probabilities_detailed`), renormalized; None when no top token stands for an option."""
    mass = [0.0] * len(keys)
    for token, logprob in top:
        spelled = token.strip().lower()
        matches = [j for j, key in enumerate(keys) if spelled and key.startswith(spelled)]
        if len(matches) == 1:
            mass[matches[0]] += math.exp(logprob)
    total = sum(mass)
    if total <= 0.0:
        return None
    return [m / total for m in mass]


def _strict_choice(text: str, keys: list[str]) -> int | None:
    """The index of the option the whole answer is, once whitespace, quotes, a trailing period and a leading
    "Answer:" are taken away (compared in lower case); None for anything else."""
    answer, previous = text, None
    while answer != previous:
        previous = answer
        answer = _ANSWER_LABEL.sub("", answer.strip().strip(_QUOTES).removesuffix(".")).strip()
    answer = answer.lower()
    return keys.index(answer) if answer in keys else None
