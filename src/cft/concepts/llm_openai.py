"""An OpenAI-compatible chat-completions backend (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio, ...).

Built on the official `openai` client, which also does the retrying: HTTP 408 / 409 / 429 / 5xx, connection
errors and timeouts are tried again with exponential backoff, and a server's `Retry-After` is honoured (one
longer than the client is willing to wait ends the request instead). Every failure reaches the caller as a
`CftError` naming the server.

The API key is read from the environment variable `api_key_env` at each request and goes nowhere but that
request's `Authorization` header: it is not stored on the object or in the `openai` client (which holds only a
placeholder), logged, put in error messages or in the response cache's key. Without a key (a local server that
needs none) no `Authorization` header is sent at all.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.parse
import warnings
from collections.abc import Callable

import openai

try:  # the HTTP library of the installed openai client (httpx2 in its later releases, httpx before)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai
    import httpx

from cft.concepts.llm import Message, Sampling
from cft.errors import CftError

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_SHOW = 300  # characters of a bad response shown in an error
_PLACEHOLDER_KEY = "not-needed"  # the openai client wants a non-empty key; the real one goes in each request
_RETRIED_STATUS = (408, 409, 429)  # and >= 500: the statuses the openai client retries


def _truncate(text: str, limit: int = _SHOW) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _parse_base_url(base_url: str) -> urllib.parse.SplitResult:
    """The URL, checked when it is given: scheme, a host without spaces, a numeric port, no query or fragment."""
    problem = f"LLM base URL {base_url!r} must look like http(s)://HOST[:PORT][/PATH] (e.g. http://localhost:8000/v1)"
    try:
        parsed = urllib.parse.urlsplit(base_url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise CftError(problem) from None
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https") or not host or any(c.isspace() for c in base_url):
        raise CftError(problem)
    if parsed.query or parsed.fragment:
        raise CftError(f"{problem}; it has a query or fragment ('?' or '#')")
    return parsed


class _DeadlineTransport(httpx.HTTPTransport):
    """Every request (each try) must finish within `deadline` seconds: httpx's timeouts bound each read, so a
    server that trickles its answer a byte at a time would otherwise hold a request for ever."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        end = time.monotonic() + self.deadline
        response = super().handle_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_DeadlineStream(response.stream, end, request, self.deadline),
            extensions=response.extensions,
            request=request,
        )


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, stream, end: float, request: httpx.Request, deadline: float) -> None:
        self.stream, self.end, self.request, self.deadline = stream, end, request, deadline

    def __iter__(self):
        for chunk in self.stream:
            if time.monotonic() > self.end:
                raise httpx.ReadTimeout(f"no whole answer within {self.deadline:g} s", request=self.request)
            yield chunk

    def close(self) -> None:
        self.stream.close()


def _tries(n: int) -> str:
    return f"{n} tr{'y' if n == 1 else 'ies'}"


class OpenAIBackend:
    """`complete` POSTs to `{base_url}/chat/completions`; `base_url` ends before that (e.g. ".../v1").

    `retries` is the `openai` client's `max_retries` and `timeout` its per-request timeout in seconds (every try
    gets the whole timeout). `backoff` and `sleep` are accepted for compatibility only and have no effect: the
    client's own backoff applies."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        require_key: bool | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float | None = None,
        concurrency: int = 4,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        base_url = str(base_url).strip().rstrip("/")
        parsed = _parse_base_url(base_url)
        if not model:
            raise CftError("an LLM model name is required (the name the server knows the model by)")
        if not (math.isfinite(timeout) and timeout > 0) or retries < 0 or concurrency < 1:
            raise CftError("LLM timeout must be > 0, retries >= 0, concurrency >= 1")
        if backoff is not None or sleep is not None:
            warnings.warn(
                "OpenAIBackend's backoff and sleep have no effect: the openai client does its own backoff",
                DeprecationWarning,
                stacklevel=2,
            )
        self.base_url = base_url
        self.url = base_url + "/chat/completions"
        self.model = str(model)
        self.api_key_env = api_key_env
        self.require_key = (parsed.hostname not in LOCAL_HOSTS) if require_key is None else bool(require_key)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.concurrency = int(concurrency)
        self._api_key()  # fail now, before any request, when a required key is missing
        # One client for all threads (its connection pool is thread-safe). It never sees the real key.
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=_PLACEHOLDER_KEY,
            max_retries=self.retries,
            timeout=self.timeout,
            http_client=openai.DefaultHttpxClient(transport=_DeadlineTransport(self.timeout)),
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _env_key(self) -> str | None:
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        return key or None

    def _api_key(self) -> str | None:
        key = self._env_key()
        if not key and self.require_key:
            raise CftError(
                f"the LLM server {self.base_url} needs an API key: set the environment variable "
                f"{self.api_key_env} (or, for a server without authentication, do not require a key)"
            )
        return key

    # ------------------------------------------------------------------ requests

    def complete(self, messages: list[Message], sampling: Sampling) -> list[str]:
        """`sampling.n` answers; a server that ignores `n` (returns fewer choices) is asked again until enough."""
        n = max(1, int(sampling.n))
        answers: list[str] = []
        for _ in range(2 * n + 2):  # every round brings at least one answer, so n rounds suffice; bounded anyway
            want = n - len(answers)
            seed = None if sampling.seed is None else int(sampling.seed) + len(answers)  # new seed for a re-ask
            body = {
                "model": self.model,
                "messages": list(messages),
                "temperature": float(sampling.temperature),
                "n": want,
                "max_tokens": int(sampling.max_tokens),
            }
            if seed is not None:
                body["seed"] = seed
            answers.extend(self._choices(self._post(body))[:want])
            if len(answers) >= n:
                return answers
        raise CftError(f"the LLM server {self.url} returned fewer than {n} answers after repeated requests")

    def _post(self, body: dict) -> object:
        """The decoded JSON reply; the client retries what is worth retrying, every failure is a CftError."""
        key = self._api_key()
        # An explicit header overrides the client's own (placeholder) one; `Omit()` sends none.
        auth = {"Authorization": f"Bearer {key}" if key else openai.Omit()}
        try:
            # The raw reply: its JSON is checked here, so that an odd server's answer is shown as it came.
            response = self._client.chat.completions.with_raw_response.create(**body, extra_headers=auth)
            text = response.text
        except openai.APITimeoutError as e:  # before APIConnectionError, its base class
            raise CftError(
                f"the LLM server {self.url} did not answer within the timeout of {self.timeout:g} s"
                f"{self._after(e.request)} (a slow model needs a longer timeout)"
            ) from e
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            raise CftError(
                f"the LLM server {self.url} failed{self._after(e.request)}: cannot reach the server "
                f"({self._scrub(reason, key)})"
            ) from e
        except openai.APIStatusError as e:
            raise self._status_error(e, key) from e
        except openai.OpenAIError as e:  # anything else the client raises (e.g. a reply it cannot read)
            raise CftError(f"the LLM server {self.url} failed: {self._show(str(e), key)}") from e
        try:
            return json.loads(text)
        except ValueError as e:
            raise CftError(f"the LLM server {self.url} sent a reply that is not JSON: {self._show(text, key)!r}") from e

    def _status_error(self, e: openai.APIStatusError, key: str | None) -> CftError:
        code = e.status_code
        try:
            text = e.response.text
        except Exception:  # the body is only for the message
            text = ""
        message = self._show(_server_message(text) or e.response.reason_phrase or "", key)
        if code in _RETRIED_STATUS or code >= 500:
            wait = (e.response.headers.get("Retry-After") or "").strip()
            when = f"{wait} s" if wait.replace(".", "", 1).isdigit() else f"until {wait}"
            asked = f" (the server asks to wait {when} before trying again)" if wait else ""
            return CftError(f"the LLM server {self.url} failed{self._after(e.request)}: HTTP {code}: {message}{asked}")
        hint = ""
        if code in (401, 403):
            hint = (
                f" (check the API key in the environment variable {self.api_key_env})"
                if key
                else f" (no API key was sent: set the environment variable {self.api_key_env})"
            )
        return CftError(f"the LLM server {self.url} refused the request (HTTP {code}): {message}{hint}")

    @staticmethod
    def _after(request) -> str:
        """' after N tries', from the retry count the openai client puts on each request it sends."""
        try:
            return " after " + _tries(int(request.headers["x-stainless-retry-count"]) + 1)
        except (AttributeError, KeyError, TypeError, ValueError):
            return ""

    @staticmethod
    def _scrub(text: str, key: str | None) -> str:
        """`text` without the API key, should a server echo it."""
        return text.replace(key, "[API key]") if key else text

    def _show(self, text: str, key: str | None) -> str:
        return _truncate(self._scrub(text, key))

    def _choices(self, reply: object) -> list[str]:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices:
            raise self._malformed("no 'choices' list", reply)
        answers = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise self._malformed("a choice without message.content", reply)
            answers.append(content)  # "" is a valid (empty) answer: the parser drops it
        return answers

    def _malformed(self, what: str, reply: object) -> CftError:
        shown = self._show(reply if isinstance(reply, str) else json.dumps(reply), self._env_key())
        return CftError(f"the LLM server {self.url} sent an unexpected reply ({what}): {shown}")


def _server_message(text: str) -> str:
    """The error message in an OpenAI-style error body ({"error": {"message": ...}}), else the body itself."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(obj, dict):
        error = obj.get("error", obj)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if obj.get("detail"):
            return str(obj["detail"])
    return text.strip()
