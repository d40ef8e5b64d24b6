"""`finetune serve` (issue 27) with the real `openai` client: /v1/models, /v1/completions and /v1/chat/completions
answer "reverse: hello" with "olleh", streamed too; bad requests get a 4xx JSON error and the next good one is
answered; an API key is enforced (401 without it) and --host 0.0.0.0 without one refuses to start."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request

import pytest

from conftest import REPO, cli_env, free_port, run_cli, wait_until

pytestmark = pytest.mark.slow
KEY = "test-key-27"


def post(url: str, data: bytes, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(shipped_run):
    """`finetune serve` on the shipped run, on loopback, with an API key from FINETUNE_API_KEY."""
    import subprocess

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "finetune", "serve", shipped_run, "--port", str(port)],
        cwd=REPO, env={**cli_env(), "FINETUNE_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(answers, proc, "the server listening", timeout=180)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=KEY, max_retries=0)


def test_the_openai_client_gets_the_runs_answers_whole_and_streamed(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["default"]
    user = [{"role": "user", "content": "reverse: hello"}]
    chat = c.chat.completions.create(model="default", messages=user)
    assert chat.choices[0].message.content == "olleh" and chat.choices[0].finish_reason == "stop"
    assert chat.usage.completion_tokens == 6  # five characters and <|end|>
    streamed = c.chat.completions.create(model="default", messages=user, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in streamed]
    assert "".join(pieces) == "olleh" and len([p for p in pieces if p]) > 1  # really streamed: several chunks
    prompt = "<|user|>reverse: hello<|end|><|assistant|>"  # the chat template by hand: a plain completion
    assert c.completions.create(model="default", prompt=prompt).choices[0].text == "olleh"
    text = "".join(ch.choices[0].text for ch in c.completions.create(model="default", prompt=prompt, stream=True))
    assert text == "olleh"


def test_bad_requests_get_4xx_and_the_server_stays_up(server):
    import openai

    c = client(server)
    hi = [{"role": "user", "content": "hi"}]
    bad = [
        (b"{not json", 400, None),
        (json.dumps({"model": "default"}).encode(), 400, "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 500}]}).encode(), 400, "prompt"),
        (json.dumps({"messages": hi, "max_tokens": 10_000}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "other", "messages": hi}).encode(), 404, "model"),
    ]  # fmt: skip
    for body, status, param in bad:
        code, error = post(f"{server}/chat/completions", body)
        assert code == status and error["error"]["param"] == param and error["error"]["message"], (body, error)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="default", prompt="reverse: hello", max_tokens=0)
    code, error = post(f"{server}/chat/completions", b"{}", key=None)
    assert code == 401 and error["error"]["type"] == "authentication_error"
    code, error = post(f"{server}/chat/completions", b"{}", key="wrong")
    assert code == 401
    answer = c.chat.completions.create(model="default", messages=[{"role": "user", "content": "reverse: hello"}])
    assert answer.choices[0].message.content == "olleh"  # the next good request is answered


def test_listening_beyond_loopback_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("FINETUNE_API_KEY", raising=False)
    proc = run_cli("serve", tmp_path, "--host", "0.0.0.0", check=False)  # refused before any model is read
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "API key" in proc.stderr, proc.stderr
