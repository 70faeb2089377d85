"""A small real OpenAI-compatible chat server on the loopback, for testing clients without mocks.

`POST /v1/chat/completions` answers "echo: <last user message> #<choice index> seed=<seed>" for each of the
`n` choices (each answer word counts as one token; an answer longer than `max_tokens` is cut and ends with
"length"); `GET /v1/models` lists `models`. Scripted faults, one per request in the order they were queued:
`fail(k, status, ...)` answers the next k requests with an error, `hang(k, seconds)` sleeps before
answering them. Every request is recorded (`requests`), and so is the most requests in flight at once.

As a judge: `judge(body)` gives (text, top) for a request, which is answered with that one choice; `top`, the
[(token, logprob)] alternatives for its first token, is sent as the choice's `logprobs` when the request asks
for them (cut to its `top_logprobs`), and `logprobs` is null when `top` is None (a server that does not do
them). `refuse_logprobs`: a request carrying `logprobs` gets 400, as some hosted APIs answer.

    with ChatServer(delay=0.05) as server:
        backend = EndpointBackend(server.base_url, "base")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # an HTTP error status, or None to answer normally (after `sleep`)
    message: str = ""
    retry_after: str | None = None
    flat: bool = False  # the error body as older vLLM writes it: {"object": "error", "message": ...}
    sleep: float = 0.0


# What a scripted judge answers: the text, and its first token's alternatives (None: no log-probabilities).
Judge = Callable[[dict[str, Any]], tuple[str, list[tuple[str, float]] | None]]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any] | None


class ChatServer:
    """`delay`: seconds (or a function of the request body giving them) each completion takes.
    `api_key`: when set, requests without `Authorization: Bearer <api_key>` get 401.
    `max_choices`: the most choices one response holds, as servers that ignore `n` do (1).
    `judge`, `refuse_logprobs`: see the module's docstring."""

    def __init__(
        self,
        *,
        models: Sequence[str] = ("base", "lora-a"),
        delay: float | Callable[[dict[str, Any]], float] = 0.0,
        api_key: str | None = None,
        max_choices: int | None = None,
        judge: Judge | None = None,
        refuse_logprobs: bool = False,
    ) -> None:
        self.models = list(models)
        self.delay = delay
        self.api_key = api_key
        self.max_choices = max_choices
        self.judge = judge
        self.refuse_logprobs = refuse_logprobs
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a hanging answer must not hold up the test's teardown
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.01,), name="chat-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def completions(self) -> list[dict[str, Any]]:
        """The bodies of the chat completion requests received, in order."""
        return [r.body for r in self.requests if r.path == "/v1/chat/completions" and r.body is not None]

    def fail(
        self,
        times: int,
        status: int,
        message: str = "",
        *,
        retry_after: str | None = None,
        flat: bool = False,
    ) -> None:
        with self._lock:
            self._faults.extend([Fault(status, message or f"scripted {status}", retry_after, flat)] * times)

    def hang(self, times: int, seconds: float) -> None:
        with self._lock:
            self._faults.extend([Fault(sleep=seconds)] * times)

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What the handler calls.

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def _completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("model") not in self.models:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if self.refuse_logprobs and "logprobs" in body:
            return 400, _error("logprobs is not supported with this model.", "invalid_request_error")
        if self.judge is not None:
            return 200, self._verdict(body)
        messages = body.get("messages") or []
        last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        n = body.get("n") or 1
        max_tokens = body.get("max_tokens") or 16
        choices = []
        for index in range(min(n, self.max_choices or n)):
            words = f"echo: {last_user} #{index} seed={body.get('seed')}".split()
            finish = "length" if len(words) > max_tokens else "stop"
            words = words[:max_tokens]
            choices.append((index, " ".join(words), finish, len(words)))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = sum(c[3] for c in choices)
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": f" {text}\n"},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                for index, text, finish, _ in choices
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _verdict(self, body: dict[str, Any]) -> dict[str, Any]:
        text, top = self.judge(body)
        logprobs = None
        if top is not None and body.get("logprobs"):
            entries = [
                {"token": token, "logprob": logprob, "bytes": list(token.encode())} for token, logprob in top
            ]
            # The sampled first token: the likeliest one (greedy); an empty `top` sends no token at all.
            content = (
                [{**entries[0], "top_logprobs": entries[: body.get("top_logprobs") or 0]}] if entries else []
            )
            logprobs = {"content": content}
        tokens = len(text.split())
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens},
        }


def _error(message: str, kind: str, *, flat: bool = False, code: int = 400) -> dict[str, Any]:
    error = {"message": message, "type": kind, "param": None, "code": code}
    return {"object": "error", **error} if flat else {"error": error}


def _handler_for(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers and the client's pool expect
        timeout = 10  # drop idle keep-alive connections

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server._record(Received("GET", self.path, self._headers(), None))
            if not self._authorized():
                return
            if self.path != "/v1/models":
                self._send(404, _error(f"no route {self.path}", "NotFoundError", code=404))
                return
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]
            self._send(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server._record(Received("POST", self.path, self._headers(), body))
            if not self._authorized():
                return
            if self.path != "/v1/chat/completions":
                self._send(404, _error(f"no route {self.path}", "NotFoundError", code=404))
                return
            server._enter()
            try:
                fault = server._next_fault()
                if fault is not None and fault.status is not None:
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    error = _error(fault.message, "ScriptedError", flat=fault.flat, code=fault.status)
                    self._send(fault.status, error, headers)
                    return
                delay = server.delay(body) if callable(server.delay) else server.delay
                server._sleep(delay + (fault.sleep if fault else 0.0))
                self._send(*server._completion(body))
            finally:
                server._leave()

        def _headers(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _authorized(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error("Incorrect API key provided.", "AuthenticationError", code=401))
            return False

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (its timeout): nothing to answer

    return Handler
