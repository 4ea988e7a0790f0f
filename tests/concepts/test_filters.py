"""Concept filters: length, the class name, similarity to any class, near-duplicates (order kept)."""

from __future__ import annotations

import numpy as np
import pytest

from cft.concepts.bank import Concept, ConceptBank
from cft.concepts.filters import FilterConfig, filter_bank
from cft.errors import CftError


def fake_sim(pairs: dict[tuple[str, str], float]):
    """Similarity from a table (symmetric); a phrase with itself is 1, anything else 0."""
    calls = []

    def sim(a, b):
        calls.append((list(a), list(b)))
        out = np.zeros((len(a), len(b)))
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                out[i, j] = 1.0 if x == y else pairs.get((x, y), pairs.get((y, x), 0.0))
        return out

    sim.calls = calls
    return sim


def bank_of(**classes: list[str]) -> ConceptBank:
    return ConceptBank({c: [Concept(n, kind="important") for n in names] for c, names in classes.items()})


def test_each_drop_reason_and_order_kept():
    bank = bank_of(
        goldfish=[
            "orange scales",
            "a very long concept name that goes on",  # 37 characters
            "Goldfish",
            "shark",
            "carassius",
            "fins",
            "fin",
            "bowl",
            "Fins",
            "water",
        ],
        shark=["teeth", "fin"],
    )
    sim = fake_sim({("carassius", "goldfish"): 0.91, ("fin", "fins"): 0.93, ("water", "bowl"): 0.89})
    out = filter_bank(bank, ["goldfish", "shark", "tench"], FilterConfig(), sim=sim)
    assert out.names("goldfish") == ["orange scales", "fins", "bowl", "water"]
    assert out.dropped["goldfish"] == [
        {"name": "a very long concept name that goes on", "reason": "longer than 30 characters (37)"},
        {"name": "Goldfish", "reason": "is the class name"},
        {"name": "shark", "reason": "is the name of class 'shark'"},
        {"name": "carassius", "reason": "similar to class 'goldfish' (0.91)"},
        {"name": "fin", "reason": "near-duplicate of 'fins' (0.93)"},
        {"name": "Fins", "reason": "duplicate of 'fins'"},
    ]
    assert out.names("shark") == ["teeth", "fin"] and "shark" not in out.dropped  # per class: fin is fine here
    assert out.provenance["filters"]["dropped"] == 6 and out.provenance["filters"]["max_length"] == 30
    # the input bank is untouched, kinds and weights carried over
    assert bank.names("goldfish")[2] == "Goldfish" and out.concepts["goldfish"][0].kind == "important"


def test_similarity_to_any_class_name_not_only_its_own():
    bank = bank_of(bird=["tabby", "feathers"])
    sim = fake_sim({("tabby", "cat"): 0.86, ("feathers", "bird"): 0.84})
    out = filter_bank(bank, ["bird", "cat"], sim=sim)
    assert out.names("bird") == ["feathers"]  # 0.84 < 0.85 stays
    assert out.dropped["bird"] == [{"name": "tabby", "reason": "similar to class 'cat' (0.86)"}]


def test_duplicates_only_against_kept_concepts_and_thresholds_inclusive():
    # "wings" duplicates "wing" but "wing" is dropped first (too close to a class): "wings" survives.
    bank = bank_of(bird=["wing", "wings", "feather", "plume"])
    sim = fake_sim({("wing", "winged"): 0.85, ("feather", "plume"): 0.9})
    out = filter_bank(bank, ["bird", "winged"], sim=sim)
    assert out.names("bird") == ["wings", "feather"]
    assert [d["name"] for d in out.dropped["bird"]] == ["wing", "plume"]
    # stricter and looser thresholds
    loose = filter_bank(bank, ["bird", "winged"], FilterConfig(class_similarity=0.9, duplicate_similarity=0.95), sim)
    assert loose.names("bird") == ["wing", "wings", "feather", "plume"]
    short = filter_bank(bank, ["bird"], FilterConfig(max_length=5), sim)
    assert short.names("bird") == ["wing", "wings", "plume"]


def test_class_similarity_computed_in_one_call():
    bank = bank_of(a=["x", "y"], b=["y", "z"])
    sim = fake_sim({})
    filter_bank(bank, ["a", "b"], sim=sim)
    to_class = [c for c in sim.calls if c[1] == ["a", "b"]]
    assert to_class == [(["x", "y", "z"], ["a", "b"])]


def test_empty_class_and_bad_config():
    out = filter_bank(bank_of(a=[]), ["a"], sim=fake_sim({}))
    assert out.concepts == {"a": []} and out.dropped == {}
    with pytest.raises(CftError, match="max_length"):
        FilterConfig(max_length=0)
    with pytest.raises(CftError, match="duplicate_similarity"):
        FilterConfig(duplicate_similarity=2.0)
    with pytest.raises(CftError, match="similarity returned shape"):
        filter_bank(bank_of(a=["x"]), ["a"], sim=lambda a, b: np.zeros((1, 5)))


def test_real_minilm():
    from cft.sentences import similarity

    names = ["goldfish", "goldfish fish", "orange scales", "bird wing", "bird wings", "fish bowl", "wing", "wings"]
    out = filter_bank(bank_of(goldfish=names), ["goldfish", "tabby cat", "airliner"], FilterConfig())
    reasons = {d["name"]: d["reason"] for d in out.dropped["goldfish"]}
    assert reasons["goldfish"] == "is the class name"
    assert reasons["goldfish fish"].startswith("similar to class 'goldfish' (0.9")
    assert reasons["bird wings"].startswith("near-duplicate of 'bird wing' (0.9")
    # bare "wing" / "wings" are only ~0.86 apart under MiniLM: kept at the paper's 0.9, merged at 0.85
    assert 0.8 < similarity(["wing"], ["wings"])[0, 0] < 0.9
    assert out.names("goldfish") == ["orange scales", "bird wing", "fish bowl", "wing", "wings"]
    looser = filter_bank(bank_of(goldfish=["wing", "wings"]), ["goldfish"], FilterConfig(duplicate_similarity=0.85))
    assert looser.names("goldfish") == ["wing"]
    assert looser.dropped["goldfish"][0]["reason"].startswith("near-duplicate of 'wing' (0.8")
