"""An OpenAI-compatible chat-completions backend (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio, ...).

Standard library only. The API key is read from the environment variable `api_key_env` at each request and goes
nowhere but the `Authorization` header: it is not stored on the object, logged, put in error messages or in the
response cache's key.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from cft.concepts.llm import Message, Sampling
from cft.errors import CftError

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is capped to this
MAX_BACKOFF = 60.0
_SHOW = 300  # characters of a bad response shown in an error


def _truncate(text: str, limit: int = _SHOW) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


class _Retryable(Exception):
    """A failure worth another try: HTTP 429 / 5xx or a connection error."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend:
    """`complete` POSTs to `{base_url}/chat/completions`; `base_url` ends before that (e.g. ".../v1")."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        require_key: bool | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base_url = str(base_url).strip().rstrip("/")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CftError(f"LLM base URL {base_url!r} must start with http:// or https:// and name a host")
        if not model:
            raise CftError("an LLM model name is required (the name the server knows the model by)")
        if timeout <= 0 or retries < 0 or backoff < 0 or concurrency < 1:
            raise CftError("LLM timeout must be > 0, retries and backoff >= 0, concurrency >= 1")
        self.base_url = base_url
        self.url = base_url + "/chat/completions"
        self.model = str(model)
        self.api_key_env = api_key_env
        self.require_key = (parsed.hostname not in LOCAL_HOSTS) if require_key is None else bool(require_key)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self._sleep = sleep
        self._api_key()  # fail now, before any request, when a required key is missing

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _api_key(self) -> str | None:
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        if not key and self.require_key:
            raise CftError(
                f"the LLM server {self.base_url} needs an API key: set the environment variable "
                f"{self.api_key_env} (or, for a server without authentication, do not require a key)"
            )
        return key or None

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
        """The decoded JSON reply, after retries on 429 / 5xx / connection errors."""
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(data)
            except _Retryable as e:
                last = str(e)
                if attempt == self.retries:
                    break
                delay = self.backoff * (2**attempt)
                if e.retry_after is not None:
                    delay = e.retry_after
                self._sleep(min(max(delay, 0.0), MAX_BACKOFF if e.retry_after is None else MAX_RETRY_AFTER))
        tries = self.retries + 1
        raise CftError(f"the LLM server {self.url} failed after {tries} tr{'y' if tries == 1 else 'ies'}: {last}")

    def _post_once(self, data: bytes) -> object:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from e
        except TimeoutError as e:
            raise self._timeout_error() from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise self._timeout_error() from e
            raise _Retryable(f"cannot reach the server ({e.reason})") from e
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {e})") from e
        text = raw.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError as e:
            raise CftError(f"the LLM server {self.url} sent a reply that is not JSON: {_truncate(text)!r}") from e

    def _timeout_error(self) -> CftError:
        return CftError(
            f"the LLM server {self.url} did not answer within the timeout of {self.timeout:g} s "
            "(a slow model needs a longer timeout)"
        )

    def _http_error(self, e: urllib.error.HTTPError) -> Exception:
        try:
            text = e.read().decode("utf-8", errors="replace")
        except Exception:  # the body is only for the message
            text = ""
        message = _server_message(text) or e.reason or ""
        if e.code == 429 or e.code >= 500:
            return _Retryable(f"HTTP {e.code}: {_truncate(str(message))}", _retry_after(e.headers))
        return CftError(f"the LLM server {self.url} refused the request (HTTP {e.code}): {_truncate(str(message))}")

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
        shown = _truncate(json.dumps(reply)) if not isinstance(reply, str) else _truncate(reply)
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


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # absent or an HTTP date: plain exponential backoff
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
