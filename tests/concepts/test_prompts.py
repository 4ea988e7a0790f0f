"""The concept prompts and the answer parser, on hand-made answers in the formats LLMs actually produce."""

from __future__ import annotations

import pytest

from cft.concepts.prompts import PROMPT_KINDS, messages_for, parse_answer
from cft.errors import CftError


@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_messages_shape(kind):
    messages = messages_for(kind, "  snow   leopard ")
    assert messages[0]["role"] == "system"
    roles = [m["role"] for m in messages[1:]]
    assert roles[-1] == "user" and roles[:-1] == ["user", "assistant"] * ((len(roles) - 1) // 2)
    assert 2 <= (len(roles) - 1) // 2 <= 3  # two or three few-shot examples
    assert '"snow leopard"' in messages[-1]["content"]
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    # the few-shot answers use different formats and parse into lists
    examples = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len({("," in e, e.lstrip()[:1]) for e in examples}) >= 2
    assert all(len(parse_answer(e)) >= 2 for e in examples)


def test_the_three_questions_differ():
    last = {kind: messages_for(kind, "duck")[-1]["content"] for kind in PROMPT_KINDS}
    assert "feature" in last["important"]
    assert "around" in last["around"]
    assert "categor" in last["superclass"]
    assert len(set(last.values())) == 3


def test_messages_errors():
    with pytest.raises(CftError, match="unknown concept prompt kind"):
        messages_for("colour", "duck")
    with pytest.raises(CftError, match="empty"):
        messages_for("important", "   ")


CASES = [
    # bullets of every kind
    ("- beak\n- wings\n- feathers", ["beak", "wings", "feathers"]),
    ("* beak\n* wings", ["beak", "wings"]),
    ("• beak\n• webbed feet", ["beak", "webbed feet"]),
    ("+ beak\n+ tail", ["beak", "tail"]),
    # numbering
    ("1. beak\n2. wings\n3. feathers", ["beak", "wings", "feathers"]),
    ("1) beak\n2) wings", ["beak", "wings"]),
    ("(1) beak\n(2) wings", ["beak", "wings"]),
    ("1.beak\n2.wings", ["beak", "wings"]),
    ("10. tail\n11. eyes", ["tail", "eyes"]),
    # commas and semicolons on one line
    ("beak, wings, feathers", ["beak", "wings", "feathers"]),
    ("beak; wings; feathers", ["beak", "wings", "feathers"]),
    ("beak, wings; feathers.", ["beak", "wings", "feathers"]),
    ("beak, wings, and feathers", ["beak", "wings", "feathers"]),
    ("- beak, wings\n- tail", ["beak", "wings", "tail"]),
    # blank lines and preambles
    ("\n\n- beak\n\n\n- wings\n\n", ["beak", "wings"]),
    ("Here are the most important features:\n- beak\n- wings", ["beak", "wings"]),
    ("Sure!\n1. water\n2. reeds", ["water", "reeds"]),
    ("Sure! Here are some things seen around a duck:\n\n* pond\n* grass", ["pond", "grass"]),
    ("Certainly. Here is a list:\nlake, pond", ["lake", "pond"]),
    ("Here are some superclasses: bird, animal", ["bird", "animal"]),
    ("Superclasses: bird, animal, vertebrate", ["bird", "animal", "vertebrate"]),
    ("The following features help:\n- beak", ["beak"]),
    ("Features:\n- beak\n- wings", ["beak", "wings"]),
    # closing remarks
    ("- beak\n- wings\n\nI hope this helps!", ["beak", "wings"]),
    ("- beak\nNote: ducks vary a lot.", ["beak"]),
    ("- beak\nLet me know if you need more.", ["beak"]),
    # trailing explanations
    ("- beak - used for eating\n- wings - for flying", ["beak", "wings"]),
    ("1. beak: flat and wide\n2. wings: used to fly, glide", ["beak", "wings"]),
    ("- beak — flat\n- tail – short", ["beak", "tail"]),
    ("- beak -- flat\n- eyes", ["beak", "eyes"]),
    ("beak - flat, wings - short", ["beak", "wings"]),
    ("- feathers (often colourful)\n- bill [orange]", ["feathers", "bill"]),
    # markdown bold and quotes
    ("1. **Beak**: flat\n2. **Webbed feet**", ["beak", "webbed feet"]),
    ("- __Wings__\n- **tail**", ["wings", "tail"]),
    ("- \"beak\"\n- \u201cwebbed feet\u201d\n- 'tail'", ["beak", "webbed feet", "tail"]),
    ("`beak`, `wings`", ["beak", "wings"]),
    ("- bird's nest\n- duck's bill", ["bird's nest", "duck's bill"]),
    # trailing periods, case, articles
    ("- Beak.\n- WINGS.\n- Feathers!", ["beak", "wings", "feathers"]),
    ("- a beak\n- an eye\n- the tail\n- The Water", ["beak", "eye", "tail", "water"]),
    ("a pond, an island, the shore", ["pond", "island", "shore"]),
    ("- another duck\n- theatre", ["another duck", "theatre"]),  # only whole-word articles go
    # de-duplication in order
    ("- beak\n- wings\n- Beak\n- the beak.\n- wings", ["beak", "wings"]),
    ("beak, beak, beak", ["beak"]),
    # junk
    ("", []),
    ("   \n\n  ", []),
    ("- \n- ...\n- ---\n- beak", ["beak"]),
    ("- " + "x" * 61 + "\n- beak", ["beak"]),
    ("- one two three four five six seven\n- beak", ["beak"]),
    ("- one two three four five six\n- beak", ["one two three four five six", "beak"]),
    ("A duck is usually seen near water.\n- pond", ["pond"]),
    ("### Features\n- beak\n***\n- wings", ["beak", "wings"]),
    # hyphenated words are kept whole
    ("- t-shirt\n- wide-angle view", ["t-shirt", "wide-angle view"]),
    # letters as list markers
    ("a) beak\nb) wings", ["beak", "wings"]),
    # tabs and odd spacing
    ("-\tbeak\n  -   webbed    feet  ", ["beak", "webbed feet"]),
    # windows line ends
    ("- beak\r\n- wings\r\n", ["beak", "wings"]),
    # numbers inside concepts survive
    ("- 4 legs\n- 2 wings", ["4 legs", "2 wings"]),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_parse_answer_none_and_non_string():
    assert parse_answer(None) == []
    assert parse_answer("") == []


def test_parse_answer_output_is_clean():
    messy = 'Sure! Here you go:\n1. **The Beak** - flat.\n2) "Wings";  Tail\n(3) an Orange Bill (male)\nHope it helps'
    out = parse_answer(messy)
    assert out == ["beak", "wings", "tail", "orange bill"]
    for item in out:
        assert item == item.lower().strip() and item and len(item) <= 60
