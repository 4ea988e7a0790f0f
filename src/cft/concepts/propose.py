"""Step 1 of the method: ask an LLM, for every class, the three concept questions and parse the answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from cft.concepts.llm import LLM, ResponseCache, Sampling, complete_cached
from cft.concepts.prompts import PROMPT_KINDS, messages_for, parse_answer
from cft.errors import CftError
from cft.progress import progress_bar


def propose(
    llm: LLM,
    classes: Iterable[str],
    kinds: Sequence[str] = PROMPT_KINDS,
    sampling: Sampling = Sampling(),  # noqa: B008 - a frozen dataclass, safe as a default
    cache: ResponseCache | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> dict[str, dict[str, list[str]]]:
    """{class: {kind: concepts}}: every (class, kind) prompt through the cache, its `sampling.n` answers parsed,
    merged and de-duplicated in order. A failure stops the run with a CftError naming the prompt; the answers
    received so far are in the cache, so a rerun asks only for what is missing."""
    classes = list(dict.fromkeys(str(c) for c in classes))
    kinds = list(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in PROMPT_KINDS:
            raise CftError(f"unknown concept prompt kind {kind!r}; choose from {', '.join(PROMPT_KINDS)}")
    if concurrency < 1:
        raise CftError(f"concurrency must be at least 1, got {concurrency}")
    jobs = [(c, k, messages_for(k, c)) for c in classes for k in kinds]
    answers: dict[tuple[str, str], list[str]] = {}
    bar = progress_bar(len(jobs), "concept prompts", unit="prompt", enabled=progress)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cft-llm")
    try:
        futures: dict[Future, tuple[str, str]] = {
            pool.submit(complete_cached, llm, messages, sampling, cache, _parsable): (c, k) for c, k, messages in jobs
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                c, k = futures[future]
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    if isinstance(error, CftError):
                        raise CftError(f'asking the LLM about "{c}" ({k}): {error}') from error
                    raise error
                answers[(c, k)] = future.result()
                if bar is not None:
                    bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    result: dict[str, dict[str, list[str]]] = {}
    for c in classes:
        result[c] = {}
        for k in kinds:
            merged: list[str] = []
            for answer in answers[(c, k)]:
                merged.extend(parse_answer(answer))
            result[c][k] = list(dict.fromkeys(merged))
    return result


def _parsable(answers: list[str]) -> bool:
    """Answers are usable when none holds undecodable bytes (U+FFFD: the server's text was not the encoding it
    claimed) and at least one concept can be parsed from them; else they are asked again and never cached."""
    if any("\ufffd" in answer for answer in answers):
        return False
    return any(parse_answer(answer) for answer in answers)
