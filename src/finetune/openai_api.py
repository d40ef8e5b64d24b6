"""The OpenAI-compatible HTTP app of `finetune serve` (FastAPI): GET /v1/models, POST /v1/completions and
/v1/chat/completions, each with `stream: true` as server-sent events, as the `openai` client library expects them.

Decoding is greedy unless a request sets temperature > 0 (then sampled, with its top_p). One generation runs at a
time (a lock): the model is shared and a CPU gains nothing from two at once. A bad request (invalid JSON, a missing
field, a prompt longer than the context, max_tokens past what is left of it) is a 4xx with an OpenAI-style JSON error,
and the server carries on. With an API key, every route needs `Authorization: Bearer KEY` (compared in constant time).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid

from fastapi import FastAPI, Request  # at module level: FastAPI resolves the handlers' annotations from here
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from finetune.runmodel import GENERATE_MAX_NEW_TOKENS

ROLES = {"system", "user", "assistant"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class Engine:
    """The model behind the app: prompt checks against its context, and generation (whole or streamed)."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.lock = threading.Lock()

    def encode(self, body: dict, chat: bool) -> list[int]:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("messages: required, a non-empty list of {role, content}", "messages")
            for m in messages:
                if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise BadRequest(f"messages: each needs a role in {sorted(ROLES)} and a string content", "messages")
            if not self.tokenizer.chat_template:
                raise BadRequest("this model has no chat template: use /v1/completions", "messages")
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]  # the client sends a list of one string
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest("prompt: required, a non-empty string", "prompt")
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def limits(self, body: dict, n_prompt: int) -> int:
        """max_tokens for this request, checked against what the context leaves after the prompt."""
        room = self.context - n_prompt
        if room < 1:
            raise BadRequest(f"prompt is {n_prompt} tokens; the model's context is {self.context}", "prompt")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is None:
            return min(GENERATE_MAX_NEW_TOKENS, room)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest(f"max_tokens: got {max_tokens!r}; allowed: an integer >= 1", "max_tokens")
        if max_tokens > room:
            raise BadRequest(
                f"max_tokens {max_tokens} + prompt {n_prompt} tokens exceed the context of {self.context}",
                "max_tokens",
            )
        return max_tokens

    def sampling(self, body: dict) -> dict:
        for key in ("n", "best_of"):
            if body.get(key, 1) != 1:
                raise BadRequest(f"{key}: only 1 is supported", key)
        if body.get("stop"):
            raise BadRequest("stop: stop sequences are not supported by this server", "stop")
        temperature = body.get("temperature") or 0.0  # greedy unless asked: what the run's eval and generate do
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise BadRequest(f"temperature: got {temperature!r}; allowed: 0 to 2", "temperature")
        if temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": float(temperature), "top_p": float(body.get("top_p") or 1.0)}

    def _kwargs(self, ids: list[int], max_tokens: int, sampling: dict) -> dict:
        import torch

        input_ids = torch.tensor([ids], device=self.model.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            **sampling,
        }

    def generate(self, ids: list[int], max_tokens: int, sampling: dict) -> tuple[str, int, str]:
        """(text, completion tokens, finish_reason)."""
        import torch

        from finetune.evaluate import decoding_attention

        with self.lock, torch.no_grad(), decoding_attention(self.model):
            out = self.model.generate(**self._kwargs(ids, max_tokens, sampling))[0, len(ids) :].tolist()
        ended = bool(out) and out[-1] == self.tokenizer.eos_token_id
        return self.tokenizer.decode(out, skip_special_tokens=True), len(out), "stop" if ended else "length"

    def stream(self, ids: list[int], max_tokens: int, sampling: dict):
        """Yields text pieces as they are decoded, then (None, completion tokens, finish_reason)."""
        import torch
        from transformers import TextIteratorStreamer

        from finetune.evaluate import decoding_attention

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = {}

        def run():
            with self.lock, torch.no_grad(), decoding_attention(self.model):
                try:
                    result["out"] = self.model.generate(**self._kwargs(ids, max_tokens, sampling), streamer=streamer)
                except BaseException:
                    streamer.end()  # the reader below stops instead of waiting forever
                    raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        out = result["out"][0, len(ids) :].tolist() if "out" in result else []
        ended = bool(out) and out[-1] == self.tokenizer.eos_token_id
        yield None, len(out), "stop" if ended else "length"


def create_app(engine: Engine, api_key: str | None) -> FastAPI:
    app = FastAPI(title="finetune serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                return JSONResponse(error_body("missing or wrong API key", kind="authentication_error"), 401)
        return await call_next(request)

    @app.get("/v1/models")
    def models():
        card = {"id": engine.name, "object": "model", "created": int(time.time()), "owned_by": "finetune"}
        return {"object": "list", "data": [card]}

    async def handle(request: Request, chat: bool):
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            if body.get("model") not in (None, engine.name):
                raise BadRequest(f"model {body['model']!r} not found; this server has {engine.name!r}", "model", 404)
            ids = engine.encode(body, chat)
            max_tokens, sampling = engine.limits(body, len(ids)), engine.sampling(body)
        except json.JSONDecodeError as e:
            return JSONResponse(error_body(f"invalid JSON: {e.msg} at char {e.pos}"), 400)
        except BadRequest as e:
            return JSONResponse(error_body(str(e), e.param), e.status)
        reply = Reply(engine.name, chat, len(ids))
        if body.get("stream"):
            events = reply.events(engine.stream(ids, max_tokens, sampling))
            return StreamingResponse(events, media_type="text/event-stream")
        return reply.whole(*await run_in_threadpool(engine.generate, ids, max_tokens, sampling))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app


class Reply:
    """The OpenAI response objects of one request: whole, or as server-sent event chunks."""

    def __init__(self, model: str, chat: bool, n_prompt: int):
        self.model, self.chat, self.n_prompt = model, chat, n_prompt
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def usage(self, n_completion: int) -> dict:
        return {"prompt_tokens": self.n_prompt, "completion_tokens": n_completion,
                "total_tokens": self.n_prompt + n_completion}  # fmt: skip

    def whole(self, text: str, n_completion: int, finish: str) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage(n_completion)}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._head("text_completion"), "choices": [choice], "usage": self.usage(n_completion)}

    def _chunk(self, text: str | None, finish: str | None, first: bool = False) -> str:
        if self.chat:
            delta = ({"role": "assistant", "content": ""} if first else {}) | ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            data = {**self._head("text_completion"), "choices": [choice]}
        return f"data: {json.dumps(data)}\n\n"

    def events(self, pieces):
        if self.chat:
            yield self._chunk(None, None, first=True)
        for piece in pieces:
            if isinstance(piece, tuple):
                yield self._chunk(None, piece[2])
            else:
                yield self._chunk(piece, None)
        yield "data: [DONE]\n\n"
