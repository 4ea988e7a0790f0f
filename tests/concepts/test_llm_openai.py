"""The OpenAI-compatible backend and `propose`, against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
import warnings

import pytest

from cft.concepts.llm import ResponseCache, Sampling
from cft.concepts.llm_openai import OpenAIBackend
from cft.concepts.prompts import PROMPT_KINDS
from cft.concepts.propose import propose
from cft.concepts.stage import propose_bank
from cft.errors import CftError
from tests.helpers.chat_server import canned, last_user, reply

KEY_ENV = "CFT_TEST_LLM_KEY"
SECRET = "sk-test-0123456789-do-not-leak"


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def backend(url, **kwargs):
    kwargs.setdefault("retries", 3)
    return OpenAIBackend(url, "test-model", api_key_env=KEY_ENV, **kwargs)


# ---------------------------------------------------------------------------------------------- complete


def test_normal_answer_with_n_choices(serve):
    server = serve(lambda body, h, i: reply("- beak\n- wings", "1. beak\n2. tail"))
    llm = backend(server.url)
    out = llm.complete([{"role": "user", "content": "hi"}], Sampling(temperature=0.5, n=2, max_tokens=64, seed=3))
    assert out == ["- beak\n- wings", "1. beak\n2. tail"]
    assert len(server.requests) == 1
    body = server.requests[0]
    assert body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "n": 2,
        "max_tokens": 64,
        "seed": 3,
    }
    assert "Authorization" not in server.headers[0]  # no key set, local server: no header
    assert llm.backend == "openai" and llm.model == "test-model"


def test_server_ignoring_n_is_asked_again(serve):
    server = serve(lambda body, h, i: reply(f"answer {i}"))  # always one choice
    out = backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling(n=3, seed=7))
    assert out == ["answer 0", "answer 1", "answer 2"]
    assert [b["n"] for b in server.requests] == [3, 2, 1]
    assert [b["seed"] for b in server.requests] == [7, 8, 9]  # a fresh seed for every re-ask


def test_no_seed_is_not_sent(serve):
    server = serve(lambda body, h, i: reply("x"))
    backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling(n=1, seed=None))
    assert "seed" not in server.requests[0]


def test_extra_choices_are_trimmed(serve):
    server = serve(lambda body, h, i: reply("a", "b", "c"))
    assert backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling(n=2)) == ["a", "b"]


def test_malformed_json(serve):
    server = serve(lambda body, h, i: reply(raw=b"<html>Bad Gateway page" + b"x" * 1000))
    with pytest.raises(CftError, match="not JSON") as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert "<html>Bad Gateway page" in str(e.value) and "more characters" in str(e.value)
    assert server.url in str(e.value)


@pytest.mark.parametrize(
    "raw, what",
    [
        ({"choices": [{"index": 0, "message": {"role": "assistant"}}]}, "message.content"),
        ({"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}, "message.content"),
        ({"choices": [{"index": 0, "text": "completion-style"}]}, "message.content"),
        ({"choices": []}, "choices"),
        ({"object": "list", "data": []}, "choices"),
        ([1, 2, 3], "choices"),
    ],
)
def test_reply_without_content(serve, raw, what):
    server = serve(lambda body, h, i: reply(raw=raw))
    with pytest.raises(CftError, match=what) as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert json.dumps(raw)[:20] in str(e.value)  # says what was received
    assert len(server.requests) == 1  # not retried


def test_empty_answer_is_not_an_error(serve):
    server = serve(lambda body, h, i: reply("", ""))
    assert backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling(n=2)) == ["", ""]


# The retries and their waits are the openai client's (`max_retries` = `retries`): the fake server's arrival times
# show them. Its backoff starts at about half a second and doubles (with up to 25% jitter), and it honours a
# server's Retry-After.


def test_429_then_success_retries_after_the_servers_delay(serve):
    def script(body, h, i):
        if i < 2:
            return reply(raw={"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"})
        return reply("ok", "ok2")

    server = serve(script)
    out = backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling(n=2))
    assert out == ["ok", "ok2"]
    assert len(server.requests) == 3
    # Retry-After honoured: a full second each time, where the client's own backoff would wait at most 0.5 s, 1 s
    gaps = server.gaps()
    assert gaps[0] >= 0.95 and gaps[1] >= 0.95, gaps
    assert all(g < 5 for g in gaps), gaps


def test_429_asking_for_too_long_a_wait_gives_up_at_once(serve):
    # the openai client does not sleep for hours on a server's word: it stops and says so (the old hand-written
    # client capped the wait at 60 s instead)
    server = serve(
        lambda body, h, i: reply(
            raw={"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "9999"}
        )
    )
    t0 = time.monotonic()
    with pytest.raises(CftError, match="failed after 1 try: HTTP 429: rate limited") as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert time.monotonic() - t0 < 5
    assert "9999 s" in str(e.value) and server.url in str(e.value)
    assert len(server.requests) == 1


def test_500_then_success_with_exponential_backoff(serve):
    server = serve(lambda body, h, i: reply(raw=b"oops", status=500) if i < 2 else reply("fine"))
    llm = backend(server.url)
    assert llm.complete([{"role": "user", "content": "hi"}], Sampling(n=1)) == ["fine"]
    assert len(server.requests) == 3
    gaps = server.gaps()
    assert gaps[0] >= 0.3 and gaps[1] > gaps[0], gaps  # waits between tries, growing (0.375-0.5 s, then 0.75-1 s)
    assert [h.get("x-stainless-retry-count") for h in server.headers] == ["0", "1", "2"]


def test_5xx_forever_gives_up(serve):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "overloaded"}}, status=503))
    with pytest.raises(CftError, match="failed after 4 tries: HTTP 503: overloaded") as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert server.url in str(e.value)
    assert len(server.requests) == 4
    gaps = server.gaps()
    assert all(g >= 0.3 for g in gaps) and gaps[2] > gaps[0], gaps  # exponential backoff between the tries


def test_retries_zero_means_one_try(serve):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "overloaded"}}, status=503))
    with pytest.raises(CftError, match="failed after 1 try: HTTP 503: overloaded"):
        backend(server.url, retries=0).complete([{"role": "user", "content": "hi"}], Sampling())
    assert len(server.requests) == 1


def test_400_shows_the_servers_message(serve):
    message = "The model `gpt-nonexistent` does not exist or you do not have access to it."
    server = serve(lambda body, h, i: reply(raw={"error": {"message": message, "type": "invalid"}}, status=404))
    with pytest.raises(CftError, match="HTTP 404") as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert message in str(e.value)
    assert server.url in str(e.value)
    assert len(server.requests) == 1  # a 4xx is not retried

    server = serve(lambda body, h, i: reply(raw=b"plain text: bad request", status=400))
    with pytest.raises(CftError, match="HTTP 400.*plain text: bad request"):
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())


def test_timeout_names_the_url_and_the_timeout(serve):
    server = serve(lambda body, h, i: reply("late", delay=1.5))
    t0 = time.monotonic()
    with pytest.raises(CftError, match=r"timeout of 0\.5 s") as e:
        backend(server.url, timeout=0.5, retries=0).complete([{"role": "user", "content": "hi"}], Sampling(n=1))
    assert time.monotonic() - t0 < 1.4
    assert server.url in str(e.value)
    assert len(server.requests) == 1


def test_timeout_is_retried_by_the_client(serve):
    # the openai client retries a timed-out request (the old hand-written client did not): every try gets the
    # whole timeout, and the message says how many there were
    server = serve(lambda body, h, i: reply("late", delay=1.5))
    with pytest.raises(CftError, match=r"timeout of 0\.5 s after 2 tries") as e:
        backend(server.url, timeout=0.5, retries=1).complete([{"role": "user", "content": "hi"}], Sampling(n=1))
    assert server.url in str(e.value) and "longer timeout" in str(e.value)
    assert len(server.requests) == 2


def test_unreachable_server(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    t0 = time.monotonic()
    with pytest.raises(CftError, match="failed after 4 tries: cannot reach") as e:
        backend(url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert url in str(e.value) and "refused" in str(e.value).lower()
    assert time.monotonic() - t0 >= 1.0  # backed off between the tries (about 0.5 + 1 + 2 s), not hammering


def test_missing_key_for_https_fails_before_any_request(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("no request may be made")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    with pytest.raises(CftError, match=KEY_ENV):
        OpenAIBackend("https://api.example.com/v1", "gpt-4o-mini", api_key_env=KEY_ENV)
    with pytest.raises(CftError, match=KEY_ENV):  # auto: any non-local host needs a key
        OpenAIBackend("http://10.1.2.3:8000/v1", "m", api_key_env=KEY_ENV)
    OpenAIBackend("https://api.example.com/v1", "m", api_key_env=KEY_ENV, require_key=False)  # explicit opt-out
    for local in ("http://localhost:8000/v1", "http://127.0.0.1:1/v1", "http://[::1]:8000/v1"):
        OpenAIBackend(local, "m", api_key_env=KEY_ENV)
    with pytest.raises(CftError, match=KEY_ENV):
        OpenAIBackend("http://localhost:8000/v1", "m", api_key_env=KEY_ENV, require_key=True)


def test_bad_url_or_model():
    with pytest.raises(CftError, match="http"):
        OpenAIBackend("localhost:8000", "m")
    with pytest.raises(CftError, match="model"):
        OpenAIBackend("http://localhost:8000/v1", "")


def test_key_is_sent_as_bearer_and_never_stored(serve, monkeypatch, tmp_path):
    def script(body, headers, i):
        assert headers.get("Authorization") == f"Bearer {SECRET}"
        return canned(body, headers, i)

    server = serve(script)
    monkeypatch.setenv(KEY_ENV, SECRET)
    llm = backend(server.url, require_key=True)
    cache = ResponseCache(tmp_path / "cache")
    out = propose(llm, ["duck", "fire truck"], cache=cache, concurrency=2)
    assert out["duck"]["important"] == ["duck important 0", "shared important", "duck important 1"]
    assert len(server.requests) == 6
    assert all(h.get("Authorization") == f"Bearer {SECRET}" for h in server.headers)
    files = list((tmp_path / "cache").rglob("*"))
    assert files
    for f in files:
        assert SECRET not in f.name
        if f.is_file():
            assert SECRET not in f.read_text()
    assert SECRET not in repr(llm) and SECRET not in str(vars(llm))
    # the cache key does not depend on the key
    monkeypatch.setenv(KEY_ENV, "another-key")
    assert propose(llm, ["duck", "fire truck"], cache=cache) == out
    assert len(server.requests) == 6  # all answers from the cache


def test_key_not_in_error_messages(serve, monkeypatch):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "nope"}}, status=401))
    monkeypatch.setenv(KEY_ENV, SECRET)
    with pytest.raises(CftError) as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert SECRET not in str(e.value) and "nope" in str(e.value)
    assert "HTTP 401" in str(e.value) and KEY_ENV in str(e.value) and server.url in str(e.value)
    assert len(server.requests) == 1  # not retried


def test_authorization_header_carries_the_env_key_read_at_each_request(serve, monkeypatch):
    server = serve(lambda body, h, i: reply("x"))
    monkeypatch.setenv(KEY_ENV, SECRET)
    llm = backend(server.url)  # a local server: the key is optional, but sent when set
    llm.complete([{"role": "user", "content": "hi"}], Sampling(n=1))
    monkeypatch.setenv(KEY_ENV, "sk-rotated")
    llm.complete([{"role": "user", "content": "hi again"}], Sampling(n=1))
    monkeypatch.delenv(KEY_ENV)
    llm.complete([{"role": "user", "content": "and again"}], Sampling(n=1))
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in server.headers]
    assert auth == [f"Bearer {SECRET}", "Bearer sk-rotated", None]  # no key: no header (not the placeholder)
    # the openai client inside holds only a placeholder, never the key
    assert llm._client.api_key != SECRET and SECRET not in str(vars(llm._client))


@pytest.mark.parametrize(
    "script, match",
    [
        (lambda b, h, i: reply(raw={"error": {"message": f"Incorrect API key provided: {SECRET}"}}, status=401), "401"),
        (lambda b, h, i: reply(raw={"error": {"message": f"bad key {SECRET}"}}, status=400), "HTTP 400"),
        (lambda b, h, i: reply(raw={"choices": [], "echo": SECRET}), "choices"),
        (lambda b, h, i: reply(raw=f"<html>{SECRET}".encode()), "not JSON"),
    ],
)
def test_a_server_echoing_the_key_does_not_put_it_in_the_message(serve, monkeypatch, script, match):
    server = serve(script)
    monkeypatch.setenv(KEY_ENV, SECRET)
    with pytest.raises(CftError, match=match) as e:
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())
    assert SECRET not in str(e.value) and "[API key]" in str(e.value)


def test_401_without_a_key_names_the_env_var(serve):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "missing bearer token"}}, status=401))
    with pytest.raises(CftError, match=f"HTTP 401.*missing bearer token.*no API key was sent.*{KEY_ENV}"):
        backend(server.url).complete([{"role": "user", "content": "hi"}], Sampling())


def test_backoff_and_sleep_are_accepted_but_deprecated():
    with pytest.warns(DeprecationWarning, match="no effect"):
        OpenAIBackend("http://localhost:8000/v1", "m", backoff=0.5)
    with pytest.warns(DeprecationWarning, match="no effect"):
        OpenAIBackend("http://localhost:8000/v1", "m", sleep=lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OpenAIBackend("http://localhost:8000/v1", "m", timeout=5, retries=0, concurrency=2)


# ---------------------------------------------------------------------------------------------- propose

CLASSES = ["duck", "fire truck", "violin", "snow leopard"]


def test_propose_shape_and_parsing(serve):
    server = serve(canned)
    out = propose(backend(server.url), CLASSES, concurrency=3)
    assert list(out) == CLASSES
    for name in CLASSES:
        assert list(out[name]) == list(PROMPT_KINDS)
        for kind in PROMPT_KINDS:
            assert out[name][kind] == [f"{name} {kind} 0", f"shared {kind}", f"{name} {kind} 1"]
    assert len(server.requests) == 12
    out = propose(backend(server.url), ["duck"], kinds=("around",), concurrency=1)
    assert out == {"duck": {"around": ["duck around 0", "shared around", "duck around 1"]}}
    with pytest.raises(CftError, match="unknown concept prompt kind"):
        propose(backend(server.url), ["duck"], kinds=("colour",))


def test_propose_names_the_failing_prompt(serve):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "unknown model"}}, status=400))
    with pytest.raises(CftError, match=r'asking the LLM about ".*" \(.*\).*unknown model'):
        propose(backend(server.url), ["duck"], concurrency=1)


def test_propose_resumes_from_the_cache(serve, tmp_path):
    clean = propose(backend(serve(canned).url), CLASSES, concurrency=2)

    def dies_after_five(body, headers, i):
        return canned(body, headers, i) if i < 5 else reply(raw={"error": {"message": "gone"}}, status=500)

    broken = serve(dies_after_five)
    cache = ResponseCache(tmp_path / "cache")
    with pytest.raises(CftError, match="gone"):
        propose(backend(broken.url, retries=1), CLASSES, cache=cache, concurrency=2)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 5

    broken.script = canned  # the same server, healthy again: the run resumes from the cache
    asked = len(broken.requests)
    resumed = propose(backend(broken.url), CLASSES, cache=cache, concurrency=2)
    assert len(broken.requests) - asked == 12 - 5
    assert resumed == clean
    answered_before = {last_user(b) for b in broken.requests[:5]}
    assert answered_before.isdisjoint(last_user(b) for b in broken.requests[asked:])
    asked = len(broken.requests)
    assert propose(backend(broken.url), CLASSES, cache=cache) == clean and len(broken.requests) == asked
    # the key holds the server too: the same model name behind another address is another model, asked again
    other = serve(canned)
    assert propose(backend(other.url), CLASSES, cache=cache) == clean and len(other.requests) == 12


def test_unusable_answers_are_asked_again_and_never_cached(serve, tmp_path, capsys):
    """An empty or unparsable answer: asked once more, not cached, and the class is reported as left empty."""

    def empty_for_violin(body, headers, i):
        return reply(*([""] * body.get("n", 1))) if "violin" in last_user(body) else canned(body, headers, i)

    server = serve(empty_for_violin)
    cache = ResponseCache(tmp_path / "cache")
    bank = propose_bank(backend(server.url), CLASSES, Sampling(), cache)
    violin = [b for b in server.requests if "violin" in last_user(b)]
    assert len(violin) == 3 * 2  # three questions, each asked twice
    assert not bank.names("violin") and all(bank.names(c) for c in CLASSES if c != "violin")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3 * (len(CLASSES) - 1)
    assert "no usable answer for violin" in capsys.readouterr().err


def test_propose_progress_bar(serve, capsys, monkeypatch):
    import sys

    server = serve(canned)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the one progress rule: bars only on a terminal
    out = propose(backend(server.url), ["duck"], progress=True)
    assert out["duck"]["superclass"]
    assert "concept prompts" in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    propose(backend(server.url), ["duck"], progress=True)
    assert "concept prompts" not in capsys.readouterr().err


def test_read_only_cache_answers_first_and_is_never_written(serve, tmp_path):
    shipped = tmp_path / "shipped"
    server = serve(canned)
    propose(backend(server.url), CLASSES, cache=ResponseCache(shipped))
    before = {p.name: p.read_bytes() for p in shipped.glob("*.json")}
    assert len(before) == 12
    asked = len(server.requests)
    layered = ResponseCache(tmp_path / "own", read_only=[shipped])
    assert propose(backend(server.url), CLASSES, cache=layered) == propose(backend(server.url), CLASSES, cache=layered)
    assert len(server.requests) == asked and not (tmp_path / "own").exists()
    # a question the read-only folder lacks is asked once and cached in the own folder only
    propose(backend(server.url), [*CLASSES, "heron"], cache=layered)
    assert len(server.requests) == asked + 3 and len(list((tmp_path / "own").glob("*.json"))) == 3
    assert {p.name: p.read_bytes() for p in shipped.glob("*.json")} == before
