"""What a phrase names in the synthetic world, as an open-vocabulary segmenter (Grounding DINO + SAM, OWLv2) would
read it: a drawn part, the whole object (its class name, a kind of it, or a broader name), a drawn context (the
background texture), or nothing.

The lexicon is written by hand and kept small on purpose: part names with the synonyms a detector would ground to
the same region, the names under which a real detector returns the whole object, and the phrases that name each
background texture. A phrase names nothing drawn unless it matches one of these: "bicycle" or "truck" in a picture
of a car, "human" in a picture of a cat, "dolphin" in a picture of a fish.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# class -> names a detector grounds to the whole object: the class, its kinds (hyponyms, synonyms) and broader names
OBJECT_NAMES: dict[str, tuple[str, ...]] = {
    "bird": ("bird", "parrot", "sparrow", "songbird", "robin", "finch", "pigeon", "dove", "crow", "eagle", "hawk",
             "owl", "bluebird", "warbler", "animal", "creature"),
    "fish": ("fish", "goldfish", "tropical fish", "clownfish", "trout", "salmon", "carp", "tuna", "animal",
             "creature"),
    "car": ("car", "automobile", "sedan", "coupe", "hatchback", "sports car", "vehicle", "motor vehicle"),
    "airplane": ("airplane", "aeroplane", "plane", "airliner", "jet", "jetliner", "aircraft", "vehicle"),
    "boat": ("boat", "ship", "sailboat", "sailing boat", "sailing ship", "yacht", "vessel", "cruise ship", "dinghy",
             "watercraft", "vehicle"),
    "house": ("house", "home", "cottage", "building", "cabin", "hut", "bungalow"),
    "tree": ("tree", "oak", "maple", "plant"),
    "flower": ("flower", "daisy", "sunflower", "blossom", "bloom", "plant"),
    "butterfly": ("butterfly", "moth", "insect", "animal", "creature"),
    "cat": ("cat", "kitten", "kitty", "tabby", "tabby cat", "pet", "animal", "creature"),
}  # fmt: skip

# (class, name) -> the parts a detector grounds that name to, besides each part's own name: synonyms (one part) and
# names of a group of parts (all of them)
PART_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("bird", "foot"): ("leg",), ("bird", "claw"): ("leg",), ("bird", "talon"): ("leg",),
    ("bird", "tail feather"): ("tail",), ("bird", "bill"): ("beak",), ("bird", "feather"): ("wing", "tail"),
    ("bird", "plumage"): ("body", "wing", "tail", "head"),
    ("fish", "tail"): ("tail fin",), ("fish", "caudal fin"): ("tail fin",), ("fish", "back fin"): ("dorsal fin",),
    ("fish", "fin"): ("tail fin", "dorsal fin", "pelvic fin"), ("fish", "scale"): ("body",),
    ("car", "tire"): ("wheel",), ("car", "tyre"): ("wheel",), ("car", "rim"): ("wheel",),
    ("car", "windshield"): ("window",), ("car", "windscreen"): ("window",), ("car", "headlamp"): ("headlight",),
    ("car", "light"): ("headlight",), ("car", "roof"): ("cabin",),
    ("airplane", "jet engine"): ("engine",), ("airplane", "turbine"): ("engine",),
    ("airplane", "propeller"): ("engine",), ("airplane", "windshield"): ("cockpit",),
    ("airplane", "body"): ("fuselage",), ("airplane", "tail"): ("tail fin",), ("airplane", "rudder"): ("tail fin",),
    ("airplane", "stabilizer"): ("tail fin",),
    ("boat", "body"): ("hull",), ("boat", "deck"): ("hull",), ("boat", "canvas"): ("sail",),
    ("house", "facade"): ("wall",), ("house", "entrance"): ("door",), ("house", "doorway"): ("door",),
    ("house", "rooftop"): ("roof",), ("house", "shingle"): ("roof",), ("house", "windowpane"): ("window",),
    ("tree", "foliage"): ("crown",), ("tree", "canopy"): ("crown",), ("tree", "leaf"): ("crown",),
    ("tree", "bark"): ("trunk",), ("tree", "bough"): ("branch",), ("tree", "limb"): ("branch",),
    ("flower", "centre"): ("center",), ("flower", "pistil"): ("center",), ("flower", "stamen"): ("center",),
    ("flower", "stalk"): ("stem",),
    ("butterfly", "forewing"): ("wing",), ("butterfly", "hindwing"): ("wing",),
    ("butterfly", "eyespot"): ("spot",), ("butterfly", "dot"): ("spot",),
    ("cat", "fur"): ("body", "head", "tail", "leg", "ear"), ("cat", "coat"): ("body", "head", "tail", "leg", "ear"),
    ("cat", "paw"): ("leg",), ("cat", "foot"): ("leg",), ("cat", "claw"): ("leg",),
}  # fmt: skip

# background texture -> phrases that name it (a context: where the world draws it, the whole background)
CONTEXT_NAMES: dict[str, tuple[str, ...]] = {
    "forest": ("forest", "wood", "woods", "woodland", "jungle", "trees"),
    "water": ("water", "sea", "ocean", "lake", "river", "pond", "wave", "underwater"),
    "road": ("road", "street", "asphalt", "highway", "pavement", "parking lot"),
    "sky": ("sky", "cloud", "clouds", "blue sky"),
    "sand": ("sand", "beach", "desert", "dune", "shore"),
    "snow": ("snow", "ice", "snowfield"),
    "grass": ("grass", "lawn", "meadow", "field", "garden"),
    "brick": ("brick", "brick wall", "bricks"),
    "night": ("night", "night sky", "star", "stars", "darkness"),
    "carpet": ("carpet", "rug", "floor"),
    "lava": ("lava", "magma"),
    "rock": ("rock", "stone", "boulder", "cliff", "gravel"),
}

_DROP = {"a", "an", "the", "its", "their", "his", "her", "of", "with", "on", "in", "and", "s"}


def words(phrase: str) -> tuple[str, ...]:
    """Lower case, punctuation and articles dropped, each word singular (wings -> wing, leaves -> leaf)."""
    tokens = re.findall(r"[a-z]+", phrase.lower().replace("'s", " "))
    return tuple(_singular(t) for t in tokens if t not in _DROP)


_IRREGULAR = {
    "leaves": "leaf", "wolves": "wolf", "halves": "half", "knives": "knife", "hooves": "hoof", "calves": "calf",
    "shelves": "shelf", "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose", "antennae": "antenna",
    "people": "person", "children": "child",
}  # fmt: skip


def _singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def _match_end(haystack: Sequence[str], needle: Sequence[str]) -> int | None:
    """Where the last occurrence of `needle` in `haystack` ends (None: it does not occur)."""
    n = len(needle)
    ends = [i + n for i in range(len(haystack) - n + 1) if n and tuple(haystack[i : i + n]) == tuple(needle)]
    return ends[-1] if ends else None


@dataclass(frozen=True)
class Reading:
    """What a phrase names in an image of one class: kind "part" (with its parts), "object", "context" (with the
    texture) or "nothing"."""

    kind: str
    targets: tuple[str, ...] = ()


def read_phrase(
    phrase: str, cls: str, parts: Sequence[str], backgrounds: Sequence[str] = tuple(CONTEXT_NAMES)
) -> Reading:
    """How a detector reads `phrase` on an image of class `cls` with these `parts`, in a world whose backgrounds
    are `backgrounds`: a part name (or a synonym, or a group's name) in the phrase gives those parts, the head
    noun winning (the match that ends last, then the longest); else a name of the object or of its kind as the
    phrase's last words gives the whole object; else a context phrase gives the background texture it names; else
    nothing. Whether that is drawn in a given image is the segmenter's business."""
    tokens = words(phrase)
    names = {part: (part,) for part in parts}
    names.update({name: found for (c, name), found in PART_NAMES.items() if c == cls and set(found) <= set(parts)})
    found = _head_match(tokens, names.items())
    if found is not None:
        return Reading("part", found)
    for name in OBJECT_NAMES.get(cls, (cls,)):
        name_words = words(name)
        if name_words and tokens[-len(name_words) :] == name_words:
            return Reading("object")
    contexts = ((name, texture) for texture in backgrounds for name in CONTEXT_NAMES.get(texture, (texture,)))
    texture = _head_match(tokens, contexts)
    return Reading("context", (texture,)) if texture is not None else Reading("nothing")


def _head_match(tokens: Sequence[str], candidates: Iterable[tuple[str, T]]) -> T | None:
    """The value of the candidate name found in `tokens` whose match ends last, then the longest (the head noun
    wins; "tail fin" over "tail"); None when no name occurs. Ties keep the first candidate."""
    best: tuple[int, int] | None = None
    value: T | None = None
    for name, candidate in candidates:
        needle = words(name)
        end = _match_end(tokens, needle)
        if end is not None and (best is None or (end, len(needle)) > best):
            best, value = (end, len(needle)), candidate
    return value
