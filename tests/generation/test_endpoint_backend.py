"""generation.backends.endpoint against a real OpenAI-compatible server on the loopback (chat_server):
what it sends, answers in order, retries, error messages, bounded concurrency, stopping."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from generation.backends.base import GenerationError, GenerationStopped, SamplingParams
from generation.backends.endpoint import EndpointBackend
from tests.generation.chat_server import ChatServer

ROOT = Path(__file__).resolve().parents[2]
PARAMS = SamplingParams(max_new_tokens=32)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer() as running:
        yield running


def backend_for(url: str, **options) -> EndpointBackend:
    return EndpointBackend(url, options.pop("model", "base"), backoff=options.pop("backoff", 0.01), **options)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_answers_in_prompt_order_with_n_samples_each() -> None:
    def delay(body: dict) -> float:  # the first prompts take longest, so they finish last
        return 0.2 - 0.05 * "abcd".index(body["messages"][-1]["content"])

    with ChatServer(delay=delay) as server, backend_for(server.base_url, concurrency=4) as backend:
        answers = backend.generate(list("abcd"), SamplingParams(temperature=0.7, seed=7), n=2)
    assert [[g.text for g in row] for row in answers] == [
        [f"echo: {p} #0 seed=7", f"echo: {p} #1 seed=7"] for p in "abcd"
    ]
    # Usage counts 8 completion tokens for the two choices together: 4 each.
    assert {(g.tokens, g.finish_reason) for row in answers for g in row} == {(4, "stop")}


def test_the_request_carries_model_messages_and_sampling(server: ChatServer) -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    params = SamplingParams(max_new_tokens=17, temperature=0.8, top_p=0.9, seed=123)
    with backend_for(server.base_url, model="lora-a") as backend:
        backend.generate([conversation, "plain"], params, n=3)
        backend.generate(["greedy"], SamplingParams())
    # The two prompts are sent at once: the server may receive either first.
    *both, greedy = server.completions
    first, second = sorted(both, key=lambda body: body["messages"][-1]["content"] == "plain")
    assert first == {
        "model": "lora-a",
        "messages": conversation,
        "max_tokens": 17,
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 123,
        "n": 3,
    }
    assert second["messages"] == [{"role": "user", "content": "plain"}]
    assert greedy["temperature"] == 0.0 and "seed" not in greedy


def test_a_server_that_ignores_n_is_asked_again_with_the_seed_moved_on() -> None:
    with ChatServer(max_choices=1) as server, backend_for(server.base_url) as backend:
        [answers] = backend.generate(["hi"], SamplingParams(temperature=1.0, seed=5), n=3)
    assert [(b["n"], b["seed"]) for b in server.completions] == [(3, 5), (2, 6), (1, 7)]
    assert [g.text for g in answers] == ["echo: hi #0 seed=5", "echo: hi #0 seed=6", "echo: hi #0 seed=7"]


def test_an_answer_cut_at_max_tokens_ends_with_length(server: ChatServer) -> None:
    with backend_for(server.base_url) as backend:
        [[answer]] = backend.generate(["hi"], SamplingParams(max_new_tokens=2))
    assert (answer.text, answer.tokens, answer.finish_reason) == ("echo: hi", 2, "length")


def test_429_is_retried_after_the_servers_retry_after(server: ChatServer) -> None:
    server.fail(2, 429, "slow down", retry_after="0")
    # A backoff of 10 s would show: Retry-After 0 is what the waits follow.
    started = time.monotonic()
    with backend_for(server.base_url, backoff=10.0) as backend:
        [[answer]] = backend.generate(["hi"], PARAMS)
    assert time.monotonic() - started < 5
    assert answer.text == "echo: hi #0 seed=None"
    assert len(server.completions) == 3


def test_500_then_success_is_retried(server: ChatServer) -> None:
    server.fail(1, 500, "warming up")
    with backend_for(server.base_url) as backend:
        assert backend.generate(["hi"], PARAMS)[0][0].text == "echo: hi #0 seed=None"
    assert len(server.completions) == 2


def test_a_persistent_500_names_the_prompt_status_and_message(server: ChatServer) -> None:
    server.fail(10, 500, "the GPU caught fire")
    with backend_for(server.base_url, max_retries=2) as backend, pytest.raises(GenerationError) as caught:
        backend.generate(["fine", "hello there"], PARAMS, n=1)
    # Both prompts started; the error is the first prompt's.
    assert caught.value.prompt_index == 0
    message = str(caught.value)
    assert message.startswith('prompt 0 ("fine"): ')
    assert "HTTP 500" in message and "the GPU caught fire" in message
    assert message.endswith("gave up after 3 tries")
    assert len(server.completions) == 6


def test_a_long_prompt_is_named_by_its_first_60_characters(server: ChatServer) -> None:
    server.fail(1, 400, "bad")
    prompt = "word " * 40
    with backend_for(server.base_url) as backend, pytest.raises(GenerationError) as caught:
        backend.generate([prompt], PARAMS)
    assert str(caught.value).startswith(f'prompt 0 ("{" ".join(prompt.split())[:60]}…"): ')


def test_a_timeout_is_retried_then_reported(server: ChatServer) -> None:
    server.hang(5, 2.0)
    started = time.monotonic()
    with (
        backend_for(server.base_url, timeout=0.5, max_retries=1) as backend,
        pytest.raises(GenerationError) as caught,
    ):
        backend.generate(["hi"], PARAMS)
    assert time.monotonic() - started < 1.9
    assert "timed out" in str(caught.value) and "0.5 s" in str(caught.value)
    assert str(caught.value).endswith("gave up after 2 tries")
    assert len(server.completions) == 2


@pytest.mark.parametrize("flat", [False, True], ids=["error-object", "old-vllm-flat"])
def test_400_is_not_retried(server: ChatServer, flat: bool) -> None:
    server.fail(3, 400, "max_tokens is too large", flat=flat)
    with backend_for(server.base_url) as backend, pytest.raises(GenerationError) as caught:
        backend.generate(["hi"], PARAMS)
    assert "HTTP 400" in str(caught.value) and "max_tokens is too large" in str(caught.value)
    assert "gave up" not in str(caught.value)
    assert len(server.completions) == 1


def test_a_failure_starts_no_further_prompt(server: ChatServer) -> None:
    server.fail(1, 400, "bad request")
    with backend_for(server.base_url, concurrency=1) as backend, pytest.raises(GenerationError) as caught:
        backend.generate(["a", "b", "c"], PARAMS)
    assert caught.value.prompt_index == 0
    assert len(server.completions) == 1


def test_a_wrong_or_missing_api_key_says_to_check_it() -> None:
    with ChatServer(api_key="sk-right") as server:
        with (
            backend_for(server.base_url, api_key="sk-wrong") as backend,
            pytest.raises(GenerationError) as caught,
        ):
            backend.generate(["hi"], PARAMS)
        assert "HTTP 401" in str(caught.value) and "Incorrect API key provided." in str(caught.value)
        assert "the API key was refused; check the API key environment variable" in str(caught.value)
        with backend_for(server.base_url) as backend, pytest.raises(GenerationError, match="none was set"):
            backend.generate(["hi"], PARAMS)
        assert len(server.completions) == 2
        with backend_for(server.base_url, api_key="sk-right") as backend:
            assert backend.generate(["hi"], PARAMS)[0][0].text == "echo: hi #0 seed=None"
        assert server.requests[-1].headers["authorization"] == "Bearer sk-right"


def test_an_unknown_model_names_it(server: ChatServer) -> None:
    with backend_for(server.base_url, model="lora-typo") as backend, pytest.raises(GenerationError) as caught:
        backend.generate(["hi"], PARAMS)
    assert "HTTP 404" in str(caught.value) and "is the model 'lora-typo' served there?" in str(caught.value)
    assert len(server.completions) == 1


def test_connection_refused_says_the_endpoint_cannot_be_reached() -> None:
    url = closed_port_url()
    with backend_for(url, max_retries=1) as backend, pytest.raises(GenerationError) as caught:
        backend.generate(["hi"], PARAMS)
    message = str(caught.value)
    assert f"the endpoint cannot be reached at {url}" in message and "Connection refused" in message
    assert message.endswith("gave up after 2 tries")


def test_concurrency_is_bounded() -> None:
    with ChatServer(delay=0.1) as server, backend_for(server.base_url, concurrency=3) as backend:
        answers = backend.generate([f"p{i}" for i in range(12)], PARAMS)
    assert len(answers) == 12
    assert server.max_in_flight == 3


def test_progress_is_told_after_each_prompt_on_the_calling_thread(server: ChatServer) -> None:
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.current_thread()))

    with backend_for(server.base_url, concurrency=2) as backend:
        backend.generate(["a", "b", "c"], PARAMS, on_progress=progress)
    assert calls == [
        (1, 3, threading.current_thread()),
        (2, 3, threading.current_thread()),
        (3, 3, threading.current_thread()),
    ]


def test_should_stop_stops_before_the_next_prompt_with_the_answers_so_far(server: ChatServer) -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(threading.current_thread())
        return len(asked) > 2

    with backend_for(server.base_url, concurrency=1) as backend, pytest.raises(GenerationStopped) as caught:
        backend.generate(["a", "b", "c", "d"], PARAMS, n=2, should_stop=should_stop)
    assert [[g.text for g in row] for row in caught.value.done] == [
        [f"echo: {p} #0 seed=None", f"echo: {p} #1 seed=None"] for p in "ab"
    ]
    assert len(server.completions) == 2
    assert set(asked) == {threading.current_thread()}


def test_models_lists_the_served_ids(server: ChatServer) -> None:
    with backend_for(server.base_url) as backend:
        assert backend.models() == ["base", "lora-a"]
    assert server.requests[-1].path == "/v1/models"


def test_models_failures_are_clear() -> None:
    url = closed_port_url()
    with backend_for(url) as backend, pytest.raises(GenerationError) as caught:
        backend.models()
    assert str(caught.value).startswith(f"listing the models: the endpoint cannot be reached at {url}")
    with ChatServer(api_key="sk-right") as server, backend_for(server.base_url) as backend:
        with pytest.raises(GenerationError, match="HTTP 401.*check the API key"):
            backend.models()
        assert len(server.requests) == 1


def test_the_endpoint_backend_imports_no_django() -> None:
    code = (
        "import sys; import generation.backends.endpoint; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PATH": "/usr/bin:/bin"})
