"""The world segmenter that behaves like a VLM, against a truth table written here by hand: for every world class,
phrases naming each drawn part, the class and its kinds, other world classes and unrelated objects, and context
phrases, with what each must return. Then the masks themselves on rendered samples."""

from __future__ import annotations

import numpy as np
import pytest

from cft.world import SyntheticWorld, WorldConfig
from cft.world.objects import CATEGORIES
from cft.world.segmenter import WorldSegmenter
from cft.world.vocabulary import Reading, read_phrase

P, OBJ, NOTHING = "part", "object", "nothing"

# class -> [(phrase, kind, targets)]; "context" rows name the texture the phrase means
TRUTH: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "bird": [
        ("leg", P, ("leg",)), ("thin legs", P, ("leg",)), ("tail", P, ("tail",)), ("wings", P, ("wing",)),
        ("body", P, ("body",)), ("head", P, ("head",)), ("sharp beak", P, ("beak",)), ("bill", P, ("beak",)),
        ("black eye", P, ("eye",)), ("feathers", P, ("wing", "tail")), ("claws", P, ("leg",)),
        ("bird", OBJ, ()), ("parrot", OBJ, ()), ("a small songbird", OBJ, ()), ("animal", OBJ, ()),
        ("cat", NOTHING, ()), ("airplane", NOTHING, ()), ("nest", NOTHING, ()), ("human", NOTHING, ()),
        ("forest", "context", ("forest",)), ("trees", "context", ("forest",)), ("blue sky", "context", ("sky",)),
    ],
    "fish": [
        ("tail fin", P, ("tail fin",)), ("dorsal fin", P, ("dorsal fin",)), ("pelvic fin", P, ("pelvic fin",)),
        ("fins", P, ("tail fin", "dorsal fin", "pelvic fin")), ("tail", P, ("tail fin",)), ("body", P, ("body",)),
        ("scales", P, ("body",)), ("stripes", P, ("stripe",)), ("eye", P, ("eye",)),
        ("fish", OBJ, ()), ("goldfish", OBJ, ()), ("tropical fish", OBJ, ()),
        ("dolphin", NOTHING, ()), ("shark", NOTHING, ()), ("bird", NOTHING, ()), ("gills", NOTHING, ()),
        ("water", "context", ("water",)), ("the ocean", "context", ("water",)), ("coral reef", NOTHING, ()),
    ],
    "car": [
        ("cabin", P, ("cabin",)), ("windows", P, ("window",)), ("windshield", P, ("window",)), ("body", P, ("body",)),
        ("wheels", P, ("wheel",)), ("tires", P, ("wheel",)), ("headlights", P, ("headlight",)),
        ("car", OBJ, ()), ("sports car", OBJ, ()), ("vehicle", OBJ, ()), ("automobile", OBJ, ()),
        ("bicycle", NOTHING, ()), ("truck", NOTHING, ()), ("driver", NOTHING, ()), ("license plate", NOTHING, ()),
        ("road", "context", ("road",)), ("street", "context", ("road",)), ("parking lot", "context", ("road",)),
    ],
    "airplane": [
        ("wings", P, ("wing",)), ("tail fin", P, ("tail fin",)), ("fuselage", P, ("fuselage",)),
        ("jet engines", P, ("engine",)), ("cockpit", P, ("cockpit",)), ("tail", P, ("tail fin",)),
        ("airplane", OBJ, ()), ("jet", OBJ, ()), ("aircraft", OBJ, ()), ("plane", OBJ, ()),
        ("bird", NOTHING, ()), ("pilot", NOTHING, ()), ("runway", NOTHING, ()), ("helicopter", NOTHING, ()),
        ("sky", "context", ("sky",)), ("clouds", "context", ("sky",)),
    ],
    "boat": [
        ("mast", P, ("mast",)), ("sails", P, ("sail",)), ("cabin", P, ("cabin",)), ("hull", P, ("hull",)),
        ("deck", P, ("hull",)),
        ("boat", OBJ, ()), ("ship", OBJ, ()), ("sailboat", OBJ, ()), ("cruise ship", OBJ, ()), ("yacht", OBJ, ()),
        ("anchor", NOTHING, ()), ("sailor", NOTHING, ()), ("fish", NOTHING, ()), ("oar", NOTHING, ()),
        ("sea", "context", ("water",)), ("waves", "context", ("water",)), ("beach", "context", ("sand",)),
    ],
    "house": [
        ("chimney", P, ("chimney",)), ("roof", P, ("roof",)), ("walls", P, ("wall",)), ("front door", P, ("door",)),
        ("windows", P, ("window",)),
        ("house", OBJ, ()), ("building", OBJ, ()), ("cottage", OBJ, ()), ("home", OBJ, ()),
        ("garage", NOTHING, ()), ("fence", NOTHING, ()), ("car", NOTHING, ()), ("person", NOTHING, ()),
        ("snow", "context", ("snow",)), ("garden", "context", ("grass",)),
    ],
    "tree": [
        ("trunk", P, ("trunk",)), ("branches", P, ("branch",)), ("crown", P, ("crown",)), ("leaves", P, ("crown",)),
        ("bark", P, ("trunk",)), ("foliage", P, ("crown",)),
        ("tree", OBJ, ()), ("trees", OBJ, ()), ("oak", OBJ, ()), ("plant", OBJ, ()),
        ("roots", NOTHING, ()), ("fruit", NOTHING, ()), ("bird", NOTHING, ()), ("flower", NOTHING, ()),
        ("grass", "context", ("grass",)), ("meadow", "context", ("grass",)),
    ],
    "flower": [
        ("stem", P, ("stem",)), ("leaves", P, ("leaf",)), ("petals", P, ("petal",)), ("center", P, ("center",)),
        ("stalk", P, ("stem",)), ("pistil", P, ("center",)),
        ("flower", OBJ, ()), ("daisy", OBJ, ()), ("sunflower", OBJ, ()), ("blossom", OBJ, ()),
        ("vase", NOTHING, ()), ("bee", NOTHING, ()), ("tree", "context", ("forest",)), ("thorns", NOTHING, ()),
        ("brick wall", "context", ("brick",)), ("bricks", "context", ("brick",)),
    ],
    "butterfly": [
        ("wings", P, ("wing",)), ("spots", P, ("spot",)), ("body", P, ("body",)), ("antennae", P, ("antenna",)),
        ("antenna", P, ("antenna",)),
        ("butterfly", OBJ, ()), ("moth", OBJ, ()), ("insect", OBJ, ()),
        ("bird", NOTHING, ()), ("flower", NOTHING, ()), ("caterpillar", NOTHING, ()), ("legs", NOTHING, ()),
        ("night sky", "context", ("night",)), ("stars", "context", ("night",)),
    ],
    "cat": [
        ("tail", P, ("tail",)), ("legs", P, ("leg",)), ("paws", P, ("leg",)), ("body", P, ("body",)),
        ("pointed ears", P, ("ear",)), ("head", P, ("head",)), ("green eyes", P, ("eye",)),
        ("whiskers", P, ("whisker",)), ("striped fur", P, ("body", "head", "tail", "leg", "ear")),
        ("cat", OBJ, ()), ("kitten", OBJ, ()), ("tabby cat", OBJ, ()), ("pet", OBJ, ()),
        ("human", NOTHING, ()), ("dog", NOTHING, ()), ("mouse", NOTHING, ()), ("collar", NOTHING, ()),
        ("carpet", "context", ("carpet",)), ("rug", "context", ("carpet",)),
    ],
}  # fmt: skip


def test_the_truth_table_covers_every_world_class_and_part():
    assert set(TRUTH) == set(CATEGORIES)
    for cls, rows in TRUTH.items():
        named = {t for _, kind, targets in rows if kind == P for t in targets}
        assert named == set(CATEGORIES[cls].parts), cls
        assert {kind for _, kind, _ in rows} >= {P, OBJ, NOTHING, "context"}, cls


@pytest.mark.parametrize("cls", sorted(TRUTH))
def test_each_phrase_reads_as_the_table_says(cls):
    parts = CATEGORIES[cls].parts
    for phrase, kind, targets in TRUTH[cls]:
        assert read_phrase(phrase, cls, parts) == Reading(kind, targets), (cls, phrase)


def _samples(n_per_class: int = 2, **config):
    world = SyntheticWorld(WorldConfig(image_size=64, **config))
    split = world.split("val", 200)
    labels, _ = split.labels_and_backgrounds()
    return [split.sample(int(i)) for k in range(len(world.classes)) for i in np.flatnonzero(labels == k)[:n_per_class]]


def test_masks_are_the_parts_the_object_the_background_or_nothing():
    """On rendered samples: a part phrase gives exactly the union of its parts' masks, an object name the object
    mask, a context phrase the background only where the sample's background is that texture, others nothing."""
    segmenter = WorldSegmenter(mode="vlm")
    for sample in _samples():
        cls = sample["class_name"]
        phrases = [phrase for phrase, _, _ in TRUTH[cls]]
        found = segmenter.segment([sample], [phrases])[0]
        for phrase, kind, targets in TRUTH[cls]:
            mask, score = found[phrase]
            if kind == P:
                expected = np.logical_or.reduce([sample["part_masks"][t] for t in targets])
            elif kind == OBJ:
                expected = sample["object_mask"].astype(bool)
            elif kind == "context" and sample["background_name"] == targets[0]:
                expected = ~sample["object_mask"].astype(bool)
            else:
                expected = np.zeros_like(mask)
            assert np.array_equal(mask, expected), (cls, phrase, kind)
            assert score == (1.0 if expected.any() else 0.0)


def test_the_embedding_segmenter_is_kept_and_kinder():
    """The first world segmenter gives a part's mask to phrases that name nothing drawn: why the vlm one exists."""
    sample = next(s for s in _samples(1) if s["class_name"] == "car")
    kind = WorldSegmenter(mode="embedding").segment([sample], [["bicycle", "truck"]])[0]
    vlm = WorldSegmenter(mode="vlm").segment([sample], [["bicycle", "truck"]])[0]
    assert any(kind[p][0].any() for p in ("bicycle", "truck"))
    assert not any(vlm[p][0].any() for p in ("bicycle", "truck"))
    assert WorldSegmenter(mode="vlm").identity() == {"name": "world", "mode": "vlm"}
