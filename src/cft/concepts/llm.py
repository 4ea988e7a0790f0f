"""The language-model interface the concept stage talks to, and its on-disk response cache.

Backends: `openai` (any OpenAI-compatible chat-completions server: cft.concepts.llm_openai), `gguf` (a local
model through llama-cpp-python: cft.concepts.llm_gguf). A backend turns chat messages into `n` sampled answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from cft.io import write_json_atomic

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    n: int = 2  # samples per prompt
    max_tokens: int = 256
    seed: int | None = 0


class LLM(Protocol):
    """A chat model: `complete` returns `sampling.n` answers to one conversation."""

    backend: str  # "openai" | "gguf"
    model: str  # the model's name or file, recorded in the cache key and the bank's provenance

    def complete(self, messages: list[Message], sampling: Sampling) -> list[str]: ...


class ResponseCache:
    """Answers on disk, one JSON file per (backend, model, messages, sampling): a rerun costs nothing, and an
    interrupted run resumes where it stopped. Files are written atomically. `read_only` folders are looked up
    after `folder` and never written (e.g. the answers shipped with the package for the demo's classes)."""

    def __init__(self, folder: str | Path, read_only: Sequence[str | Path] = ()) -> None:
        self.folder = Path(folder)
        self.read_only = [Path(f) for f in read_only]

    def key(self, llm: LLM, messages: list[Message], sampling: Sampling) -> str:
        payload = {"backend": llm.backend, "model": llm.model, "messages": messages, "sampling": asdict(sampling)}
        server = getattr(llm, "base_url", None)
        if server:  # the same model name on another server is another model (local backends have none)
            payload["server"] = server
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        for folder in (self.folder, *self.read_only):
            answers = _read_answers(folder / f"{key}.json")
            if answers is not None:
                return answers
        return None

    def put(self, key: str, answers: list[str]) -> None:
        write_json_atomic(self.folder / f"{key}.json", {"answers": answers})


def _read_answers(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        answers = json.loads(path.read_text())["answers"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry is asked again
    return answers if isinstance(answers, list) and all(isinstance(a, str) for a in answers) else None


def complete_cached(
    llm: LLM,
    messages: list[Message],
    sampling: Sampling,
    cache: ResponseCache | None,
    usable: Callable[[list[str]], bool] = lambda answers: any(a.strip() for a in answers),
    tries: int = 2,
) -> list[str]:
    """`llm.complete` through the cache (when given). Answers that are not `usable` (default: all empty) are
    asked again, up to `tries` times, and never cached: a rerun asks again instead of reusing a failure."""
    key = cache.key(llm, messages, sampling) if cache is not None else None
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return hit
    answers: list[str] = []
    for _ in range(max(tries, 1)):
        answers = llm.complete(messages, sampling)
        if usable(answers):
            if cache is not None:
                cache.put(key, answers)
            return answers
    return answers
