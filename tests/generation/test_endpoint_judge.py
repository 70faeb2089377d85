"""EndpointBackend as a pairwise judge, against a real OpenAI-compatible server on the loopback (chat_server
with a scripted `judge`): probabilities from the first token's log-probabilities, the strict reading of the
answer where there are none, unparseable answers, servers refusing logprobs, and the prompt loop."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest

from generation.backends.base import GenerationError, GenerationStopped
from generation.backends.endpoint import EndpointBackend
from tests.generation.chat_server import ChatServer

OPTIONS = ["A", "B", "tie"]


def backend_for(url: str, **options: Any) -> EndpointBackend:
    return EndpointBackend(url, "base", backoff=0.01, **options)


def last_user(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


def answers(text: str, top: list[tuple[str, float]] | None = None):
    """A judge that gives every request the same answer."""
    return lambda body: (text, top)


def test_probabilities_are_the_options_top_logprobs_renormalized() -> None:
    top = [("A", math.log(0.6)), ("B", math.log(0.3)), ("The", math.log(0.05)), ("tie", math.log(0.05))]
    conversation = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "Which?"}]
    with ChatServer(judge=answers("A", top)) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed([conversation, "plain"], OPTIONS)
    expected = np.array([0.6, 0.3, 0.05]) / 0.95
    np.testing.assert_allclose(readings.probabilities, [expected, expected])
    assert readings.methods == ["logprobs", "logprobs"]
    assert readings.texts == ["A", "A"]
    first = next(body for body in server.completions if body["messages"] == conversation)
    assert first == {
        "model": "base",
        "messages": conversation,
        "max_tokens": 8,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
    }


def test_choice_probabilities_returns_the_detailed_array() -> None:
    top = [("B", math.log(0.9)), ("A", math.log(0.1))]
    with ChatServer(judge=answers("B", top)) as server, backend_for(server.base_url) as backend:
        probabilities = backend.choice_probabilities(["x", "y", "z"], OPTIONS)
        empty = backend.choice_probabilities([], OPTIONS)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities, [[0.1, 0.9, 0.0]] * 3)
    assert empty.shape == (0, 3)


def test_prefix_tokens_count_for_their_option_and_a_shared_prefix_for_none() -> None:
    top = [
        ("A", math.log(0.3)),
        ("t", math.log(0.1)),
        ("Tie", math.log(0.2)),
        (" tie", math.log(0.1)),
        ("tied", math.log(0.1)),  # longer than the option: not it
        ("  ", math.log(0.1)),  # whitespace spells nothing
        ("\u0120B", math.log(0.1)),  # a raw byte-level token is not " B"
    ]
    with ChatServer(judge=answers("A", top)) as server, backend_for(server.base_url) as backend:
        [row] = backend.choice_probabilities(["x"], OPTIONS)
        np.testing.assert_allclose(row, np.array([0.3, 0.0, 0.4]) / 0.7)
        shared = [("b", math.log(0.5)), ("bet", math.log(0.2)), ("Both", math.log(0.1)), ("w", math.log(0.1))]
        server.judge = answers("better", shared)
        [row] = backend.choice_probabilities(["x"], ["better", "both", "worse"])
    # "b" starts both "better" and "both": it counts for neither.
    np.testing.assert_allclose(row, [0.5, 0.25, 0.25])


@pytest.mark.parametrize(
    ("text", "picked"),
    [("A", 0), (" b \n", 1), ("Tie.", 2), ('"tie"', 2), ("Answer: B", 1), ("answer:'A'.", 0), ("“TIE”", 2)],
)
def test_without_logprobs_the_whole_answer_is_read_strictly(text: str, picked: int) -> None:
    with ChatServer(judge=answers(text, None)) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed(["x"], OPTIONS)
    assert readings.probabilities.tolist() == [[float(j == picked) for j in range(3)]]
    assert readings.methods == ["parsed"]
    assert readings.texts == [text]
    assert server.completions[0]["logprobs"] is True  # asked for, ignored by the server


@pytest.mark.parametrize(
    "text", ["A is better", "I think B.", "Both are fine", "", "A or B", "tie tie", "**A**", "Answer:"]
)
def test_an_answer_that_is_not_exactly_one_option_is_unparseable(text: str) -> None:
    with ChatServer(judge=answers(text, None)) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed(["x", "y"], OPTIONS)
    assert np.isnan(readings.probabilities).all() and readings.probabilities.shape == (2, 3)
    assert readings.methods == ["unparseable", "unparseable"]
    assert readings.texts == [text, text]


def test_an_unparseable_answer_keeps_its_first_200_characters_and_the_other_rows_are_read() -> None:
    long = "Well, " + "it depends on what you value most. " * 10

    def judge(body: dict[str, Any]) -> tuple[str, None]:
        return (long, None) if last_user(body) == "long" else ("B.", None)

    with ChatServer(judge=judge) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed(["ok", "long", "ok"], OPTIONS)
    assert readings.methods == ["parsed", "unparseable", "parsed"]
    assert readings.texts[1] == long[:200] and len(long) > 200
    assert readings.probabilities[[0, 2]].tolist() == [[0.0, 1.0, 0.0]] * 2
    assert np.isnan(readings.probabilities[1]).all()


def test_options_missing_from_the_top_tokens_fall_back_to_the_strict_reading() -> None:
    top = [("The", math.log(0.7)), ("I", math.log(0.2)), ("Both", math.log(0.1))]

    def judge(body: dict[str, Any]) -> tuple[str, list[tuple[str, float]]]:
        return ("tie" if last_user(body) == "short" else "The answer is A", top)

    with ChatServer(judge=judge) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed(["short", "sentence"], OPTIONS)
    assert readings.methods == ["parsed", "unparseable"]
    assert readings.probabilities[0].tolist() == [0.0, 0.0, 1.0]
    assert np.isnan(readings.probabilities[1]).all()
    assert readings.texts == ["tie", "The answer is A"]


def test_empty_logprobs_content_falls_back_to_the_strict_reading() -> None:
    with ChatServer(judge=answers("A", [])) as server, backend_for(server.base_url) as backend:
        readings = backend.choice_probabilities_detailed(["x"], OPTIONS)
    assert (readings.methods, readings.probabilities.tolist()) == (["parsed"], [[1.0, 0.0, 0.0]])


def test_a_server_refusing_logprobs_is_asked_again_without_and_remembered() -> None:
    with (
        ChatServer(judge=answers("B", [("B", 0.0)]), refuse_logprobs=True) as server,
        backend_for(server.base_url, concurrency=1) as backend,
    ):
        readings = backend.choice_probabilities_detailed(["a", "b", "c"], OPTIONS)
        assert backend.logprobs_refused
        backend.choice_probabilities(["d"], OPTIONS)
    assert readings.methods == ["parsed"] * 3
    assert readings.probabilities.tolist() == [[0.0, 1.0, 0.0]] * 3
    asked = [("logprobs" in body, "top_logprobs" in body, last_user(body)) for body in server.completions]
    assert asked == [(True, True, "a"), (False, False, "a"), (False, False, "b"), (False, False, "c")] + [
        (False, False, "d")
    ]


def test_a_400_for_another_reason_is_reported_and_logprobs_are_still_asked_for() -> None:
    with ChatServer(judge=answers("A", [("A", 0.0)])) as server, backend_for(server.base_url) as backend:
        server.fail(2, 400, "the prompt is too long")
        with pytest.raises(GenerationError) as caught:
            backend.choice_probabilities(["a"], OPTIONS)
        assert not backend.logprobs_refused
        message = str(caught.value)
        assert message.startswith('prompt 0 ("a"): ')
        assert "HTTP 400" in message and "the prompt is too long" in message
        assert caught.value.prompt_index == 0
        assert backend.choice_probabilities_detailed(["b"], OPTIONS).methods == ["logprobs"]
    assert ["logprobs" in body for body in server.completions] == [True, False, True]


def test_a_persistent_500_names_the_prompt_and_gives_up() -> None:
    with (
        ChatServer(judge=answers("A", None)) as server,
        backend_for(server.base_url, max_retries=1) as backend,
    ):
        server.fail(10, 500, "the GPU caught fire")
        with pytest.raises(GenerationError, match=r'^prompt 0 \("a"\): .*HTTP 500.*gave up after 2 tries$'):
            backend.choice_probabilities(["a"], OPTIONS)
    assert len(server.completions) == 2


def test_should_stop_stops_before_the_next_prompt_on_the_calling_thread() -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(threading.current_thread())
        return len(asked) > 2

    with (
        ChatServer(judge=answers("A", None)) as server,
        backend_for(server.base_url, concurrency=1) as backend,
        pytest.raises(GenerationStopped) as caught,
    ):
        backend.choice_probabilities(["a", "b", "c", "d"], OPTIONS, should_stop=should_stop)
    assert caught.value.done == []
    assert [last_user(body) for body in server.completions] == ["a", "b"]
    assert set(asked) == {threading.current_thread()}


def test_concurrency_is_bounded_and_rows_follow_the_prompts() -> None:
    def judge(body: dict[str, Any]) -> tuple[str, list[tuple[str, float]]]:
        verdict = "AB"[int(last_user(body)[1:]) % 2]
        return verdict, [(verdict, math.log(0.8)), ("tie", math.log(0.2))]

    def delay(body: dict[str, Any]) -> float:  # the first prompts take longest, so they finish last
        return 0.15 - 0.01 * int(last_user(body)[1:])

    with (
        ChatServer(judge=judge, delay=delay) as server,
        backend_for(server.base_url, concurrency=3) as backend,
    ):
        probabilities = backend.choice_probabilities([f"p{i}" for i in range(12)], OPTIONS)
    assert server.max_in_flight == 3
    expected = [[0.8, 0.0, 0.2] if i % 2 == 0 else [0.0, 0.8, 0.2] for i in range(12)]
    np.testing.assert_allclose(probabilities, expected)


def test_progress_is_told_after_each_prompt_on_the_calling_thread() -> None:
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.current_thread()))

    with (
        ChatServer(judge=answers("tie", None)) as server,
        backend_for(server.base_url, concurrency=2) as backend,
    ):
        backend.choice_probabilities(["a", "b", "c"], OPTIONS, on_progress=progress)
    assert calls == [(k, 3, threading.current_thread()) for k in (1, 2, 3)]


@pytest.mark.parametrize("options", [["A", "a"], ["A", " "], ["tie", "Tie "]])
def test_options_must_be_nonempty_and_distinct_ignoring_case(options: list[str]) -> None:
    with (
        ChatServer() as server,
        backend_for(server.base_url) as backend,
        pytest.raises(ValueError, match="must be non-empty and differ ignoring case"),
    ):
        backend.choice_probabilities(["x"], options)
    assert server.completions == []
