"""The concept bank: JSON layout, round trip, hand-written banks, clear errors."""

from __future__ import annotations

import json

import pytest

from cft.concepts.bank import Concept, ConceptBank, read_hand_bank
from cft.errors import CftError


def make_bank() -> ConceptBank:
    return ConceptBank(
        concepts={
            "goldfish": [Concept("orange scales", 1.0, "important"), Concept("water", 0.5, "around", {"occ": 0.4})],
            "bird": [Concept("animal", 2.0, "superclass")],
        },
        dropped={"goldfish": [{"name": "goldfish", "reason": "is the class name"}]},
        provenance={"llm": "gpt-4o-mini", "seed": 0},
    )


def test_round_trip_and_exact_layout(tmp_path):
    bank = make_bank()
    path = bank.save(tmp_path / "sub" / "bank.json")
    data = json.loads(path.read_text())
    assert data == {
        "concepts": {
            "goldfish": [
                {"name": "orange scales", "weight": 1.0, "kind": "important"},
                {"name": "water", "weight": 0.5, "kind": "around", "stats": {"occ": 0.4}},
            ],
            "bird": [{"name": "animal", "weight": 2.0, "kind": "superclass"}],
        },
        "dropped": {"goldfish": [{"name": "goldfish", "reason": "is the class name"}]},
        "provenance": {"llm": "gpt-4o-mini", "seed": 0},
    }
    back = ConceptBank.load(path)
    assert back == bank
    assert back.names("goldfish") == ["orange scales", "water"]  # order kept
    assert not list(tmp_path.glob("sub/.*.tmp"))  # atomic write leaves no temp file


def test_drop_moves_a_concept_with_its_reason():
    bank = make_bank()
    removed = bank.drop("goldfish", "water", "occurrence 0 %")
    assert removed.name == "water" and bank.names("goldfish") == ["orange scales"]
    assert bank.dropped["goldfish"][-1] == {"name": "water", "reason": "occurrence 0 %"}
    bank.drop("bird", "animal", "too generic")
    assert bank.concepts["bird"] == [] and bank.dropped["bird"] == [{"name": "animal", "reason": "too generic"}]
    with pytest.raises(CftError, match="no such concept"):
        bank.drop("bird", "animal", "again")
    with pytest.raises(CftError, match="no class 'cat'"):
        bank.drop("cat", "fur", "x")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"dropped": {}}, "missing field 'concepts'"),
        ({"concepts": {"bird": "wing"}}, r"concepts\['bird'\] must be a list"),
        ({"concepts": {"bird": [{"weight": 1.0}]}}, r"concepts\['bird'\]\[0\] has no 'name'"),
        ({"concepts": {"bird": [{"name": "wing", "weight": "heavy"}]}}, r"\('wing'\): 'weight' must be a number"),
        ({"concepts": {"bird": [{"name": "wing", "weight": True}]}}, "'weight' must be a number"),
        ({"concepts": {"bird": [{"name": "wing", "kind": "other"}]}}, "'kind' must be one of"),
        ({"concepts": {}, "dropped": {"bird": [{"name": "x"}]}}, "needs string 'name' and 'reason'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_load_errors_name_the_file_and_field(tmp_path, data, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CftError, match=match) as e:
        ConceptBank.load(path)
    assert str(path) in str(e.value)


def test_load_missing_and_broken_files(tmp_path):
    with pytest.raises(CftError, match="no such file"):
        ConceptBank.load(tmp_path / "nope.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(CftError, match="not valid JSON"):
        ConceptBank.load(tmp_path / "b.json")


def test_load_defaults_dropped_and_provenance(tmp_path):
    path = tmp_path / "min.json"
    path.write_text(json.dumps({"concepts": {"bird": [{"name": "wing"}]}}))
    bank = ConceptBank.load(path)
    assert bank.concepts["bird"] == [Concept("wing", 1.0, "bank")] and bank.dropped == {} and bank.provenance == {}


def test_hand_bank_json_and_yaml(tmp_path):
    (tmp_path / "bank.json").write_text(json.dumps({"bird": ["beak", ["wing", 0.5]], "car": [["wheel", 2]]}))
    (tmp_path / "bank.yaml").write_text("bird:\n  - beak\n  - [wing, 0.5]\ncar:\n  - [wheel, 2]\n")
    a = read_hand_bank(tmp_path / "bank.json")
    b = read_hand_bank(tmp_path / "bank.yaml")
    assert a.concepts == b.concepts
    assert a.concepts["bird"] == [Concept("beak", 1.0, "bank"), Concept("wing", 0.5, "bank")]
    assert a.weights("car") == {"wheel": 2.0} and isinstance(a.weights("car")["wheel"], float)
    assert b.provenance["source"] == "hand" and b.provenance["file"].endswith("bank.yaml")
    # a hand bank saves in the standard layout and loads back
    assert ConceptBank.load(a.save(tmp_path / "out.json")).concepts == a.concepts


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bird: beak\n", "class 'bird' must map to a list"),
        (
            "bird:\n  - [wing]\n",
            r"class 'bird', item 0 \(\['wing'\]\): write a concept as a name or as \[name, weight\]",
        ),
        ("bird:\n  - [wing, heavy]\n", "class 'bird', item 0.*weight must be a positive number"),
        ("bird:\n  - beak\n  - [wing, -1]\n", "class 'bird', item 1.*weight must be a positive number"),
        ("bird:\n  - [3, 1.0]\n", "item 0.*name must be a non-empty string"),
        ("bird:\n  - beak\n  - Beak\n", "'Beak' appears twice"),
        ("- beak\n", "expected a mapping"),
        ("bird: [beak\n", "not valid YAML"),
    ],
)
def test_hand_bank_errors_name_file_class_and_item(tmp_path, text, match):
    path = tmp_path / "hand.yml"
    path.write_text(text)
    with pytest.raises(CftError, match=match) as e:
        read_hand_bank(path)
    assert str(path) in str(e.value)


def test_hand_bank_suffix_and_missing(tmp_path):
    (tmp_path / "bank.txt").write_text("bird: [beak]")
    with pytest.raises(CftError, match="use a .json, .yaml or .yml file"):
        read_hand_bank(tmp_path / "bank.txt")
    with pytest.raises(CftError, match="no such file"):
        read_hand_bank(tmp_path / "none.yaml")
