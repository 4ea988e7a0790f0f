"""The three concept questions asked of the LLM for every class, and the parser that turns an answer into a list.

The questions follow the Label-free Concept Bottleneck recipe (important visual features, things seen around the
object, superclasses), written in our own words, each with a short few-shot exchange whose answers use different
list formats so that the model learns that any plain list will do. `parse_answer` is deliberately forgiving:
small local models answer with preambles, numbering, bold text and explanations, and all of that is stripped.
"""

from __future__ import annotations

import re

from cft.concepts.llm import Message
from cft.errors import CftError

PROMPT_KINDS = ("important", "around", "superclass")

MAX_CHARS = 60  # a parsed item longer than this is junk, not a concept
MAX_WORDS = 6

_SYSTEM = (
    "You help build a vocabulary of visual concepts for an image classifier. "
    "Answer with a short list of short noun phrases and nothing else."
)

_QUESTIONS = {
    "important": 'Which visual features matter most when you recognise a "{}" in a photo? Give a list.',
    "around": 'Which things are most often seen around a "{}" in a photo? Give a list.',
    "superclass": 'Which broader categories does a "{}" belong to? Give a list.',
}

# (class, answer) pairs per kind; the formats differ on purpose (dashes, commas, numbers).
_EXAMPLES = {
    "important": [
        ("zebra", "- black and white stripes\n- mane\n- hooves\n- long face"),
        ("teapot", "spout, handle, lid, round body"),
        ("lighthouse", "1. tall tower\n2. lamp room\n3. red and white bands"),
    ],
    "around": [
        ("canoe", "1. lake\n2. paddle\n3. life jacket\n4. shoreline"),
        ("laptop", "desk, coffee mug, keyboard, office chair"),
        ("camel", "- sand dunes\n- desert\n- rider"),
    ],
    "superclass": [
        ("golden retriever", "dog, mammal, pet"),
        ("violin", "- string instrument\n- musical instrument"),
        ("espresso", "1. coffee\n2. drink"),
    ],
}


def messages_for(kind: str, class_name: str) -> list[Message]:
    """The chat for one (kind, class): a system message, a few-shot exchange, then the question about the class."""
    if kind not in _QUESTIONS:
        raise CftError(f"unknown concept prompt kind {kind!r}; choose from {', '.join(PROMPT_KINDS)}")
    name = " ".join(str(class_name).split())
    if not name:
        raise CftError("a class name is empty; every class needs a name to ask the LLM about")
    question = _QUESTIONS[kind]
    messages: list[Message] = [{"role": "system", "content": _SYSTEM}]
    for example, answer in _EXAMPLES[kind]:
        messages.append({"role": "user", "content": question.format(example)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": question.format(name)})
    return messages


# A list marker at the start of a line: -, *, •, +, "1.", "1)", "(1)", "a)", "#" headers are handled apart.
_MARKER = re.compile(r"^\s*(?:[-*•·‣◦+–—]+\s*|\(\s*\d+\s*\)\s*|\d+\s*[.)]\s*|\d+\s*:\s+|[a-zA-Z][.)]\s+)")
_POLITE = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great question)\b[^a-z0-9]*", re.IGNORECASE)
_PREAMBLE = re.compile(r"^(?:here\s+(?:are|is)|here's|these\s+are|the\s+(?:most|following))\b", re.IGNORECASE)
_EXPLANATION = re.compile(r"\s+[-–—]+\s+|\s*[-–—]{2,}\s*|\s*[–—]\s*|:\s*|\s*=\s+")
_PARENTHESES = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_QUOTES = '"“”„«»`'
_CLOSING = re.compile(
    r"^(?:i\s|i'|hope\s|let\s+me|feel\s+free|note\b|these\s+(?:are|features|items|things)\b|in\s+summary)",
    re.IGNORECASE,
)
_SENTENCE_VERB = re.compile(r"\b(?:is|are|was|were|can|should|would|will)\b")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_CONJUNCTION = re.compile(r"^(?:and|or)\s+")


def _clean(item: str) -> str:
    item = item.replace("**", "").replace("__", "")
    item = _PARENTHESES.sub("", item)
    for q in _QUOTES:
        item = item.replace(q, "")
    item = item.strip().strip("'‘’ \t")
    item = item.rstrip(".!?,;: \t").lower()
    item = " ".join(item.split())
    item = _CONJUNCTION.sub("", item)
    item = _ARTICLE.sub("", item)
    item = item.strip("'‘’ ").rstrip(".!?,;: ")
    return item


def _cut_explanation(text: str) -> str:
    return _EXPLANATION.split(text.replace("**", ""), maxsplit=1)[0]


def parse_answer(text: str) -> list[str]:
    """The concepts in one LLM answer: lower-case, de-duplicated in order, junk dropped (see module docstring)."""
    items: list[str] = []
    for raw in str(text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or set(line) <= set("-=*_ "):
            continue  # blank, markdown header, horizontal rule
        line = _POLITE.sub("", line).strip()
        if not line:
            continue
        if _CLOSING.match(line):
            continue  # "I hope this helps!", "Note: ..."
        marker = _MARKER.match(line)
        if marker:
            body = line[marker.end() :]
            pieces = re.split(r"[,;]", _cut_explanation(body))
        else:
            if _PREAMBLE.match(line) or line.rstrip("*").endswith(":"):
                # "Here are some features: beak, wings" keeps what follows the colon; a bare preamble is skipped
                head, sep, rest = line.partition(":")
                if not sep or not rest.strip():
                    continue
                line = rest
            else:
                head, sep, rest = line.partition(":")
                if sep and re.search(r"[,;]", rest) and not re.search(r"[,;]", head) and len(head.split()) <= 3:
                    line = rest  # "Superclasses: bird, animal" is a labelled one-line list
            pieces = [_cut_explanation(piece) for piece in re.split(r"[,;]", line)]
        items.extend(_clean(piece) for piece in pieces)
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if not item or len(item) > MAX_CHARS or len(item.split()) > MAX_WORDS or not re.search(r"[a-z0-9]", item):
            continue
        if _SENTENCE_VERB.search(item):  # a sentence, not a concept
            continue
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
