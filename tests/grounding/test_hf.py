"""The Hugging Face segmenters on tiny random models built offline from configs: plumbing, thresholds, helpers.

Random weights say nothing about quality; these tests prove shapes, keys, types, batching, thresholds, loading
and errors. Nothing is downloaded: the hub is switched to offline mode for every test here.
"""

from __future__ import annotations

import json

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from cft.errors import CftError  # noqa: E402
from cft.grounding.hf import SAM3, CLIPSeg, GroundedSAM, OWLv2SAM, SamMasker  # noqa: E402
from cft.grounding.hf_boxes import (  # noqa: E402
    grounding_prompt,
    mask_padded_queries,
    masks_from_detections,
    names_words,
    pad_boxes,
)
from cft.grounding.hf_common import clip_boxes, found, heatmap_mask, union  # noqa: E402
from cft.grounding.hf_dense import select_images  # noqa: E402
from cft.grounding.registry import SEGMENTERS, build_segmenter, segmenter_options  # noqa: E402
from cft.segmenter import IdentifiedSegmenter, Segmenter  # noqa: E402
from tests.helpers.grounding import (  # noqa: E402
    save,
    tiny_clipseg,
    tiny_grounding_dino,
    tiny_owlv2,
    tiny_sam,
    tiny_sam2,
    tiny_sam3,
    write_vocab,
)

SIZES = [(40, 50), (64, 30), (33, 33)]  # (H, W) of the test images: all different
LOW, HIGH = -1e9, 1e9  # SAM mask thresholds (logits) that keep every pixel / none


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread: two threads on a busy 2-core machine were 50x slower here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- the tiny models' vocabulary (the models are in tests/helpers/grounding.py) and the images -----------------------


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SIZES]
    return [arrays[0], Image.fromarray(arrays[1]), arrays[2]]  # numpy and PIL mixed


PHRASES = [["cat", "Water"], ["dog", "red wheel", "sky"], []]  # the last image has no phrases


def check_plumbing(out, phrases=PHRASES):
    """One dict per image, the phrases as keys in order, bool masks at each image's size, float scores."""
    assert len(out) == len(phrases)
    for res, size, ps in zip(out, SIZES, phrases):
        assert list(res) == ps
        for mask, score in res.values():
            assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == size
            assert isinstance(score, float)
            assert mask.any() or score == 0.0  # an empty mask has score 0.0


def all_found(out) -> bool:
    return all(m.any() and s > 0 for res in out for m, s in res.values())


def none_found(out) -> bool:
    return all(not m.any() and s == 0.0 for res in out for m, s in res.values())


# ---- pure helpers against hand-computed values ---------------------------------------------------------------------


def test_clip_boxes_clips_and_drops_empty_boxes():
    boxes = np.array([[-5, 2, 10, 8], [40, 30, 70, 90], [60, 5, 80, 9], [3, 4, 3, 9]], np.float32)
    got, scores = clip_boxes(boxes, np.array([0.9, 0.8, 0.7, 0.6]), (40, 50))
    np.testing.assert_array_equal(got, [[0, 2, 10, 8], [40, 30, 50, 40]])  # 3rd lies right of the image, 4th flat
    np.testing.assert_allclose(scores, [0.9, 0.8])


def test_union_found_and_pad_boxes():
    masks = np.zeros((3, 2, 3), np.int64)
    masks[0, 0, 0] = masks[2, 1, 2] = 1
    np.testing.assert_array_equal(union(masks, (2, 3)), [[True, False, False], [False, False, True]])
    assert union(torch.zeros(0, 2, 3), (2, 3)).shape == (2, 3) and not union(np.zeros((0, 2, 3)), (2, 3)).any()
    assert found(np.zeros((2, 2)), 0.9)[1] == 0.0 and found(np.eye(2), 0.9)[1] == pytest.approx(0.9)
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    np.testing.assert_array_equal(pad_boxes(boxes, 4), [[0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_heatmap_resize_threshold_and_score():
    logits = torch.tensor([[-10.0, 10.0]])  # 1 x 2 map, resized to 3 x 4: columns -10, -5, 5, 10 (bilinear)
    mask, score = heatmap_mask(logits, (3, 4), 0.5)
    np.testing.assert_array_equal(mask, np.tile([False, False, True, True], (3, 1)))
    assert score == pytest.approx(1 / (1 + np.exp(-10)))
    mask, score = heatmap_mask(logits, (3, 4), 1 / (1 + np.exp(-7.5)))  # sigmoid(5) < t < sigmoid(10)
    np.testing.assert_array_equal(mask[0], [False, False, False, True])
    assert heatmap_mask(logits, (3, 4), 1.5)[0].sum() == 0 and heatmap_mask(logits, (3, 4), 1.5)[1] == 0.0


def test_prompts_labels_and_padded_queries():
    assert grounding_prompt("Red Wheel") == "red wheel." and grounding_prompt(" sky. ") == "sky."
    special = {"[CLS]", "[SEP]", "[PAD]"}
    assert names_words("cat. [SEP]", special) and not names_words(". [SEP]", special) and not names_words("", special)
    logits = torch.zeros(2, 4, 3)
    out = mask_padded_queries(logits, [3, 1])
    assert (out[0] == 0).all() and (out[1, :, 0] == 0).all() and (out[1, :, 1:] == torch.finfo(out.dtype).min).all()


class RectangleMasker:
    """A perfect SAM: each box's mask is the box itself."""

    def masks(self, images, boxes):
        out = []
        for im, bs in zip(images, boxes):
            m = np.zeros((len(bs), *im.shape[:2]), bool)
            for k, (x0, y0, x1, y1) in enumerate(np.asarray(bs, int)):
                m[k, y0:y1, x0:x1] = True
            out.append(m)
        return out


def test_masks_from_detections_unions_the_boxes_of_a_phrase():
    images = [np.zeros((6, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)]
    dets = [
        {
            "wheel": (np.array([[0, 0, 2, 2], [5, 3, 8, 6]], np.float32), np.array([0.4, 0.7], np.float32)),
            "sky": (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)),
            "dot": (np.array([[1, 1, 1, 3]], np.float32), np.array([0.9], np.float32)),  # zero width: empty mask
        },
        {"cat": (np.array([[1, 1, 3, 2]], np.float32), np.array([0.5], np.float32))},
    ]
    out = masks_from_detections(RectangleMasker(), images, dets)
    expected = np.zeros((6, 8), bool)
    expected[0:2, 0:2] = expected[3:6, 5:8] = True
    np.testing.assert_array_equal(out[0]["wheel"][0], expected)
    assert out[0]["wheel"][1] == pytest.approx(0.7)  # the best box
    assert not out[0]["sky"][0].any() and out[0]["sky"][1] == 0.0 and out[0]["sky"][0].shape == (6, 8)
    assert not out[0]["dot"][0].any() and out[0]["dot"][1] == 0.0  # a box whose mask is empty: not found
    assert out[1]["cat"][0].sum() == 2 and out[1]["cat"][1] == pytest.approx(0.5)


# ---- SAM / SAM2 box prompts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [tiny_sam, tiny_sam2], ids=["sam", "sam2"])
def test_sam_masker_gives_one_mask_per_box_at_image_size(build, images):
    arrays = [np.asarray(im) for im in images]
    boxes = [np.array([[0, 0, 20, 20], [10, 5, 45, 35]], np.float32), np.zeros((0, 4), np.float32)]
    boxes.append(np.array([[2, 2, 30, 30], [0, 0, 10, 10], [5, 5, 33, 33]], np.float32))
    model, processor = build()
    masker = SamMasker(model, processor, torch.device("cpu"), LOW, batch_size=2)
    with torch.inference_mode():
        masks = masker.masks(arrays, boxes)
    assert [m.shape for m in masks] == [(2, 40, 50), (0, 64, 30), (3, 33, 33)]
    assert all(m.dtype == bool and m.all() for m in masks)  # threshold -1e9 keeps every pixel
    masker.mask_threshold = HIGH
    with torch.inference_mode():
        assert not any(m.any() for m in masker.masks(arrays, boxes))


# ---- the four backends end to end ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sam", [tiny_sam, tiny_sam2], ids=["sam", "sam2"])
def test_grounded_sam_end_to_end(sam, vocab_dir, images):
    pairs = dict(detector=tiny_grounding_dino(vocab_dir), sam=sam())
    seg = GroundedSAM(box_threshold=0.0, mask_threshold=LOW, batch_size=3, device="cpu", **pairs)
    assert isinstance(seg, IdentifiedSegmenter) and isinstance(seg, Segmenter)
    out = seg.segment(images, PHRASES)
    check_plumbing(out)
    assert all_found(out) and out[2] == {}
    one = images[:1], PHRASES[:1]
    assert none_found(GroundedSAM(box_threshold=1.5, device="cpu", **pairs).segment(*one))
    no_phrase = GroundedSAM(box_threshold=0.0, text_threshold=1.5, require_phrase=True, device="cpu", **pairs)
    assert none_found(no_phrase.segment(*one))  # no token passes the text threshold
    ident = seg.identity()
    assert ident["name"] == "grounded-sam" and ident["detector_model"] == ident["sam_model"] == "custom"
    assert ident != GroundedSAM(box_threshold=0.1, mask_threshold=LOW, device="cpu", **pairs).identity()
    json.dumps(ident)


def test_owlv2_sam_end_to_end(vocab_dir, images):
    pairs = dict(detector=tiny_owlv2(vocab_dir), sam=tiny_sam())
    seg = OWLv2SAM(box_threshold=0.0, mask_threshold=LOW, batch_size=2, device="cpu", **pairs)
    phrases = [["cat"], ["dog", "red wheel", "sky"], []]  # one query vs three: padding queries in the batch
    out = seg.segment(images, phrases)
    check_plumbing(out, phrases)
    assert out[0]["cat"][0].all() and out[0]["cat"][1] > 0
    arrays = [np.asarray(im) for im in images[:2]]
    with torch.inference_mode():  # padding queries of image 0 (batched with 3 phrases) take no box from "cat"
        alone, batched = seg._detect(arrays[:1], phrases[:1]), seg._detect(arrays, phrases[:2])
    assert len(batched[0]["cat"][0]) == len(alone[0]["cat"][0]) > 0
    assert none_found(OWLv2SAM(box_threshold=1.5, device="cpu", **pairs).segment(images, phrases))
    assert seg.identity()["box_threshold"] == 0.0 != OWLv2SAM(device="cpu", **pairs).identity()["box_threshold"]


def test_sam3_end_to_end(vocab_dir, images):
    pair = tiny_sam3(vocab_dir)
    seg = SAM3(score_threshold=0.0, mask_threshold=0.0, batch_size=2, device="cpu", sam3=pair)
    out = seg.segment(images, PHRASES)
    check_plumbing(out)
    assert all_found(out) and all(m.all() for res in out for m, _ in res.values())  # sigmoid > 0 everywhere
    one = images[:1], PHRASES[:1]
    assert none_found(SAM3(score_threshold=1.5, device="cpu", sam3=pair).segment(*one))
    assert none_found(SAM3(score_threshold=0.0, mask_threshold=1.5, device="cpu", sam3=pair).segment(*one))
    one_by_one = SAM3(score_threshold=0.0, mask_threshold=0.0, batch_size=1, device="cpu", sam3=pair)
    for a, b in zip(one_by_one.segment(images, PHRASES), out):  # cached vision features picked right
        for p in a:
            assert (a[p][0] == b[p][0]).mean() > 0.99 and a[p][1] == pytest.approx(b[p][1], abs=1e-5)
    assert seg.identity() == {"name": "sam3", "sam3_model": "custom", "score_threshold": 0.0, "mask_threshold": 0.0}


def test_sam3_feature_selection_repeats_images():
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    feats = Sam3VisionEncoderOutput(
        fpn_hidden_states=(torch.arange(3.0).reshape(3, 1), torch.arange(6.0).reshape(3, 2)),
        fpn_position_encoding=(torch.ones(1, 1),),  # shared across the batch: kept as is
    )
    picked = select_images(feats, [2, 2, 0])
    assert picked.fpn_hidden_states[0].flatten().tolist() == [2, 2, 0]
    assert picked.fpn_hidden_states[1].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert picked.fpn_position_encoding[0].shape == (1, 1)


def test_clipseg_end_to_end(vocab_dir, images):
    pair = tiny_clipseg(vocab_dir)
    seg = CLIPSeg(threshold=0.0, batch_size=3, device="cpu", clipseg=pair)  # a batch mixes image sizes
    out = seg.segment(images, PHRASES)
    check_plumbing(out)
    assert all(m.all() and 0 < s < 1 for res in out for m, s in res.values())
    strict = CLIPSeg(threshold=1.5, device="cpu", clipseg=pair)
    assert none_found(strict.segment(images, PHRASES))
    mask, score = CLIPSeg(threshold=0.5, device="cpu", clipseg=pair).segment(images[:1], [["cat"]])[0]["cat"]
    assert score == (pytest.approx(out[0]["cat"][1]) if mask.any() else 0.0)  # the max probability, or 0 if empty
    assert seg.identity() == {"name": "clipseg", "clipseg_model": "custom", "threshold": 0.0}
    assert strict.identity()["threshold"] == 1.5


# ---- loading from folders, and loading errors ----------------------------------------------------------------------


def test_every_backend_loads_from_a_local_folder(vocab_dir, images, tmp_path):
    sam = save(tiny_sam(), tmp_path / "sam")
    built = [
        GroundedSAM(save(tiny_grounding_dino(vocab_dir), tmp_path / "gd"), sam, box_threshold=0.0, device="cpu"),
        OWLv2SAM(save(tiny_owlv2(vocab_dir), tmp_path / "owl"), sam, box_threshold=0.0, device="cpu"),
        SAM3(save(tiny_sam3(vocab_dir), tmp_path / "sam3"), score_threshold=0.0, device="cpu", local_files_only=True),
        CLIPSeg(save(tiny_clipseg(vocab_dir), tmp_path / "clipseg"), device="cpu", local_files_only=True),
    ]
    for seg in built:
        check_plumbing(seg.segment(images[:2], [["cat"], ["red wheel"]]), [["cat"], ["red wheel"]])
        assert str(tmp_path) in json.dumps(seg.identity())


def test_loading_errors_name_the_model_and_the_way_out(vocab_dir, tmp_path):
    with pytest.raises(CftError, match=r"clipseg_model: cannot load 'nobody/no-such-model'.*hf download"):
        CLIPSeg("nobody/no-such-model", device="cpu", local_files_only=True)
    with pytest.raises(CftError, match="sam3_model: cannot load 'facebook/sam3'"):
        SAM3(device="cpu")  # the default id, offline and not cached
    with pytest.raises(CftError, match="clipseg_model: no folder"):
        CLIPSeg(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(CftError, match=r"sam_model \(or sam\) must be a SAM or SAM2 model"):
        GroundedSAM(detector=tiny_grounding_dino(vocab_dir), sam=tiny_clipseg(vocab_dir), device="cpu")
    with pytest.raises(CftError, match=r"clipseg must be a \(model, processor\) pair"):
        CLIPSeg(clipseg="model", device="cpu")


# ---- user mistakes -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clipseg(vocab_dir):
    return CLIPSeg(device="cpu", clipseg=tiny_clipseg(vocab_dir))


@pytest.mark.parametrize(
    ("image", "what"),
    [
        (np.zeros((8, 8, 3), np.float32), "float32 array of shape"),
        (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
        (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\)"),
        (np.zeros((0, 8, 3), np.uint8), r"shape \(0, 8, 3\)"),
        ("cat.jpg", "got a str"),
    ],
)
def test_not_an_image(clipseg, image, what):
    with pytest.raises(CftError, match=rf"images\[1\]: expected a PIL image or a uint8 numpy array.*{what}"):
        clipseg.segment([np.zeros((8, 8, 3), np.uint8), image], [["cat"], ["cat"]])


def test_bad_phrases_and_options(clipseg, vocab_dir):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(CftError, match="2 images but 1 phrase lists"):
        clipseg.segment([img, img], [["cat"]])
    with pytest.raises(CftError, match=r"phrases\[0\]\[1\]: expected a non-empty phrase string, got ' '"):
        clipseg.segment([img], [["cat", " "]])
    with pytest.raises(CftError, match=r"phrases\[0\]: expected a list of phrase strings, got 'cat'"):
        clipseg.segment([img], ["cat"])
    pair = tiny_clipseg(vocab_dir)
    for bad, match in [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(threshold="high"), "threshold must be a finite number >= 0.0"),
        (dict(device="nonsense"), "device must be a torch device"),
    ]:
        with pytest.raises(CftError, match=match):
            CLIPSeg(clipseg=pair, **{"device": "cpu", **bad})
    out = clipseg.segment([img, img], [["cat", "cat"], []])  # a repeated phrase is segmented once
    assert list(out[0]) == ["cat"] and out[1] == {}


# ---- registry ------------------------------------------------------------------------------------------------------


def test_registry_builds_by_name_and_checks_options(vocab_dir):
    assert tuple(SEGMENTERS) == ("grounded-sam", "sam3", "owlv2-sam", "clipseg", "world")
    world = build_segmenter("world", threshold=0.6, sim=lambda a, b: np.zeros((len(a), len(b))), mode="embedding")
    assert world.identity() == {"name": "world", "threshold": 0.6, "text_model": "custom"}
    assert build_segmenter("world").identity() == {"name": "world", "mode": "vlm"}  # the default reads like a VLM
    assert isinstance(world, IdentifiedSegmenter)
    seg = build_segmenter("clipseg", clipseg=tiny_clipseg(vocab_dir), threshold=0.3, device="cpu")
    assert isinstance(seg, CLIPSeg) and seg.identity()["threshold"] == 0.3
    assert {"detector_model", "sam_model", "box_threshold", "text_threshold"} <= set(segmenter_options("grounded-sam"))
    with pytest.raises(CftError, match="unknown segmenter 'sam4': choose one of grounded-sam, sam3, owlv2-sam"):
        build_segmenter("sam4")
    with pytest.raises(
        CftError, match="segmenter 'clipseg' has no option box_threshold: valid options are clipseg_model"
    ):
        build_segmenter("clipseg", box_threshold=0.3)


def test_cft_masks_command_with_a_local_model(vocab_dir, tmp_path, capsys):
    """`cft masks` end to end: a tiny CLIPSeg saved to a folder, named with --opt; then `cft masks show`."""
    from PIL import Image

    from cft.cli import main
    from cft.grounding.store import MaskStore
    from tests.helpers.masks import write_bank

    model = save(tiny_clipseg(vocab_dir), tmp_path / "clipseg")
    rng = np.random.default_rng(0)
    for cls in ("goldfish", "tabby cat"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (30 + k, 40, 3), dtype=np.uint8)).save(
                tmp_path / "images" / cls / f"{k}.png"
            )
    write_bank(tmp_path / "bank.json", {"goldfish": ["cat", "sky"], "tabby cat": ["dog"]})
    args = ["masks", "--images", str(tmp_path / "images"), "--concepts", str(tmp_path / "bank.json"),
            "--segmenter", "clipseg", "--out", str(tmp_path / "store"), "--opt", f"clipseg_model={model}",
            "--opt", "threshold=0.0", "--opt", "device=cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    store = MaskStore(tmp_path / "store")
    assert store.image_ids() == ["goldfish/0.png", "goldfish/1.png", "tabby cat/0.png", "tabby cat/1.png"]
    entry = store.read("goldfish/1.png", verify=True)
    assert entry.names == ["cat", "sky"] and entry.concepts.shape == (2, 31, 40) and entry.concepts.all()
    assert store.description()["segmenter"]["threshold"] == 0.0
    assert "4/4 images have masks" in capsys.readouterr().out
    assert main(args) == 0 and "4 already done" in capsys.readouterr().out
    assert main(["masks", "--images", str(tmp_path / "images"), "--concepts", str(tmp_path / "bank.json"),
                 "--segmenter", "clipseg", "--out", str(tmp_path / "s2"), "--opt", "thresh=1"]) == 2  # fmt: skip
    assert "has no option thresh" in capsys.readouterr().err
    assert main(["masks", "show", "--store", str(tmp_path / "store"), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "sheet.png")]) == 0  # fmt: skip
