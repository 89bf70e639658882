"""`hkgai serve`: the grounded answerer of `hkgai ask` behind an OpenAI-compatible HTTP API,
loaded once; and the client `hkgai ask` uses when `HKGAI_SERVE_URL` names such a server.

What is served is the whole `hkgai ask` pipeline (input guardrail, hybrid retrieval, the
model, output guardrail, citations), not the bare checkpoint: a client never gets a reply that
skipped the guardrails or the retrieved passages. The bare registered pyfunc is what
`mlflow models serve -m models:/hkgai-v1@champion` serves.

Routes (FastAPI on uvicorn, one process, one question at a time):

* `POST /v1/chat/completions`: the last `user` message is the question (earlier turns and
  system messages are not used: the answerer is single-turn). Sampling parameters
  (`temperature`, `max_tokens`, ...) are accepted and ignored, since answers are greedy, as
  benchmark_scores measured them; `stream: true` and `n` above 1 are refused.
* `POST /v1/completions`: `prompt` (a string, or a list of strings answered one by one) as
  the question.
* `GET /v1/models`: the one served model id, the registered model's name (`hkgai-v1`).
* `GET /health`: `{"status": "ok", "model", "model_version", "index_version"}` without asking
  the registry; 503 with `"status": "no_index"` while no live index stands behind the alias.

Every completion carries the `hkgai ask --json` object under the extra key `hkgai` (citations,
guard verdicts, `model_version`, notes; for `/v1/completions` a list, one per prompt); OpenAI
clients ignore unknown keys. `finish_reason`
is `content_filter` when a guardrail answered instead of the model. A request field
`extractive: true` (not OpenAI's) answers with passage sentences, as `hkgai ask --extractive`.
Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a bad
request (a body that is not JSON included), 404 for another model id or an unknown path, 405
for a wrong method, 503 when the champion or the index cannot be reached.

Which model answers is asked of the registry before every question (one alias lookup, see
rag/models.py `CurrentModel`): a new champion, or a rollback, answers from the next question
on; the question that sees the change waits while it loads. The index is read through its
alias on every question too, so the nightly refresh is served without a restart.

This module imports only the standard library and pydantic (which the settings load anyway)
at import time, so `hkgai ask` with a server configured starts without loading torch, MLflow or
the web framework.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

#: What `hkgai ask` says when it answers with passage sentences because it was asked to.
EXTRACTIVE_NOTE = "extractive answer (--extractive): the passage sentences closest to the question; no model was asked"


class ModelUnavailable(RuntimeError):
    """The model the registry names cannot be reached or loaded; nothing else answers for it."""


class EndpointError(RuntimeError):
    """An `hkgai serve` endpoint could not answer. `status` is the HTTP status (None when the
    server could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def current_model(model):
    """`model.get()` (a rag/models.py CurrentModel): (generator or None, note). Raises
    ModelUnavailable, saying why, when the registry or the champion cannot be reached or loaded."""
    from mlflow.exceptions import MlflowException

    try:
        return model.get()
    except (RuntimeError, MlflowException) as error:
        # RegistryUnavailable, ChampionNotServable, ModelLoadError, MLflow refusing: answering
        # with another model would hide that the approved one is not serving.
        raise ModelUnavailable(f"cannot reach the champion model: {error}; not answering with another model "
                               "(--extractive answers from the passages)") from error


class AnswerService:
    """One loaded answerer (store, embedder, guard) and the model that answers with it.

    `model`: a rag/models.py `CurrentModel` (re-checked per question), or None for extractive
    answers only. `ask` is serialised by a lock: the guard, the embedder and the model are
    shared, and one CPU process gains nothing from answering two questions at once."""

    def __init__(self, answerer, model=None) -> None:
        self.answerer = answerer
        self.model = model
        self._lock = threading.Lock()

    def ask(self, question: str, extractive: bool = False):
        """An AskResult (rag/answer.py). Raises ModelUnavailable when the registry or the
        champion cannot be reached or loaded, GuardInputError for an unusable question,
        RuntimeError when there is no live index."""
        with self._lock:
            generator, note = None, None
            if not extractive and self.model is not None:
                generator, note = current_model(self.model)
            self.answerer.generator = generator
            result = self.answerer.ask(question)
        if extractive and result.citations:
            # The answerer's own note says no model exists, which is not why there is none here.
            result.note = EXTRACTIVE_NOTE
        elif note and not result.note:
            result.note = note
        return result

    def model_version(self) -> str | None:
        """The label of the model the last question was answered with (None: extractive)."""
        choice = getattr(self.model, "choice", None)
        return choice.label if choice else None

    def index_version(self) -> str | None:
        return self.answerer.store.get_alias(self.answerer.alias)


# ---------------------------------------------------------------------------------- the server

# Module-level so that FastAPI can resolve them from the endpoints' (postponed) annotations.
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    # OpenAI parameters this server does not use (temperature, max_tokens, ...) are allowed.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage]
    stream: bool = False
    n: int = 1
    extractive: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | list[str]
    stream: bool = False
    n: int = 1
    extractive: bool = False


class RequestRefused(Exception):
    """A request answered with an OpenAI-shaped error instead of a completion."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param


def _openai_error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": param, "code": code}})


def _text_of(content) -> str | None:
    """A message's text: a string, or OpenAI's list of content parts (text parts joined)."""
    if content is None or isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def create_app(service: AnswerService, model_name: str):
    """The FastAPI application serving `service` under the model id `model_name`."""
    import logging

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from hkgai_pipelines.safety.guard import GuardInputError

    log = logging.getLogger("hkgai.serve")
    started = int(time.time())

    app = FastAPI(title="hkgai", summary="The Hong Kong assistant (guarded, grounded) behind an OpenAI-compatible API")

    @app.exception_handler(RequestRefused)
    async def refused(_request: Request, error: RequestRefused):
        return _openai_error(error.status, str(error), error.kind, error.code, error.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            # Its `loc` is the byte offset of the JSON error, not a parameter.
            return _openai_error(400, f"the request body is not valid JSON: {first.get('msg', 'malformed body')} at byte "
                                      f"{first.get('loc', ('', '?'))[-1]}", "invalid_request_error")
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return _openai_error(400, f"invalid request: {first.get('msg', 'malformed body')}" + (f" ({param})" if param else ""),
                             "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException):
        # An unknown path (404) or a wrong method (405): OpenAI's shape, as for every other error.
        return _openai_error(error.status_code, str(error.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception):
        log.exception("answering failed")
        return _openai_error(500, f"{type(error).__name__}: {error}", "server_error")

    def check(model: str | None, stream: bool, n: int) -> None:
        if model not in (None, model_name):
            raise RequestRefused(404, f"The model '{model}' does not exist; this server serves '{model_name}'",
                                 "invalid_request_error", "model_not_found", "model")
        if stream:
            raise RequestRefused(400, "stream: true is not supported; ask without streaming", "invalid_request_error", param="stream")
        if n != 1:
            raise RequestRefused(400, "n must be 1: answers are greedy, so every choice would be the same",
                                 "invalid_request_error", param="n")

    def answer(question: str, extractive: bool) -> tuple[dict, str]:
        """(the `hkgai ask --json` object, finish_reason)."""
        try:
            result = service.ask(question, extractive=extractive)
        except GuardInputError as error:
            raise RequestRefused(400, str(error), "invalid_request_error") from None
        except ModelUnavailable as error:
            raise RequestRefused(503, str(error), "server_error", "model_unavailable") from None
        except RuntimeError as error:  # no live index behind the alias
            raise RequestRefused(503, str(error), "server_error", "index_unavailable") from None
        guard = result.guard
        # Also when the model's text was blocked and replaced by the documents' own sentences.
        filtered = guard["input"]["verdict"] == "block" or any((guard.get(key) or {}).get("verdict") == "block" for key in ("output", "model_output"))
        return result.to_json(), "content_filter" if filtered else "stop"

    @app.get("/health")
    def health():
        """200 `{"status": "ok", ...}` when questions can be answered; 503 with status
        `no_index` while no live index stands behind the alias (every question would get 503),
        so a readiness probe keeps traffic away until `vector_index` is materialized. The
        registry is not asked: a champion that cannot be loaded shows on the next question."""
        from fastapi.responses import JSONResponse

        index_version = service.index_version()
        body = {"status": "ok" if index_version else "no_index", "model": model_name, "model_version": service.model_version(),
                "index_version": index_version}
        return JSONResponse(status_code=200 if index_version else 503, content=body)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": started, "owned_by": "hkgai"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatCompletionRequest) -> dict:
        check(request.model, request.stream, request.n)
        questions = [_text_of(message.content) for message in request.messages if message.role == "user"]
        if not questions or questions[-1] is None:
            raise RequestRefused(400, "no user message to answer", "invalid_request_error", param="messages")
        result, finish = answer(questions[-1], request.extractive)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["answer"]}, "finish_reason": finish}],
            "usage": None, "hkgai": result,
        }

    @app.post("/v1/completions")
    def completions(request: CompletionRequest) -> dict:
        check(request.model, request.stream, request.n)
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not prompts:
            raise RequestRefused(400, "prompt is empty", "invalid_request_error", param="prompt")
        answered = [answer(prompt, request.extractive) for prompt in prompts]
        return {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model_name,
            "choices": [{"index": i, "text": result["answer"], "logprobs": None, "finish_reason": finish}
                        for i, (result, finish) in enumerate(answered)],
            "usage": None, "hkgai": [result for result, _ in answered],
        }

    return app


# ---------------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Endpoint:
    """An `hkgai serve` server as `hkgai ask` reaches it. `url`: its root, with or without the
    `/v1` that OpenAI base URLs end in; `timeout_s`: the longest one answer may take."""

    url: str
    timeout_s: float = 120.0

    @property
    def base(self) -> str:
        root = self.url.rstrip("/")
        return root if root.endswith("/v1") else f"{root}/v1"

    def ask(self, question: str, model: str | None = None, extractive: bool = False) -> dict:
        """The `hkgai ask --json` object for `question`. `model`: the model id to ask for (None:
        the one the server serves). Raises EndpointError (with the HTTP status, or None when the
        server cannot be reached) naming the URL."""
        import httpx

        body = {"messages": [{"role": "user", "content": question}], "extractive": extractive}
        if model is not None:
            body["model"] = model
        try:
            # Connecting is quick or not at all; the answer itself may take a while on a big model.
            response = httpx.post(f"{self.base}/chat/completions", json=body, timeout=httpx.Timeout(self.timeout_s, connect=5.0))
        except httpx.HTTPError as error:
            raise EndpointError(f"hkgai serve at {self.url} is unreachable: {type(error).__name__}: {error}") from None
        try:
            payload = response.json()
        except json.JSONDecodeError:
            raise EndpointError(f"hkgai serve at {self.url} answered HTTP {response.status_code} with no JSON", response.status_code) from None
        if response.status_code != 200:
            message = (payload.get("error") or {}).get("message") if isinstance(payload, dict) else None
            raise EndpointError(f"hkgai serve at {self.url}: HTTP {response.status_code}: {message or payload}", response.status_code)
        if not isinstance(payload, dict) or not isinstance(payload.get("hkgai"), dict):
            # Another OpenAI-compatible server would answer without retrieval or guardrails.
            raise EndpointError(f"{self.url} is not an hkgai serve endpoint (its answer has no `hkgai` object)", response.status_code)
        return payload["hkgai"]
