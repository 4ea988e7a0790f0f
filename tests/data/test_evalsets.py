"""EvalSet readers on tiny fake trees written in each dataset's published layout."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from cft.data.classes import imagenet_wnids, wnid_to_index
from cft.data.evalsets import EvalSet, eval_set_names, group_sizes, load_eval_set, read_seg_item
from cft.data.evalsets.class_lists import IMAGENET_A_WNIDS, IMAGENET_R_WNIDS, SI_SCORE_CLASSES
from cft.errors import CftError
from tests.helpers.evalsets import write_mat

A_STINGRAY, A_LAST = "n01498041", "n12267677"  # ImageNet-A classes, indices 6 and 988
R_GOLDFISH = "n01443537"  # ImageNet-R class, index 1
TENCH, TOILET_TISSUE = "n01440764", "n15075141"  # indices 0 and 999; in neither A nor R


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def _tree(root: Path, counts: dict[str, int], suffix: str = ".JPEG") -> Path:
    for folder, n in counts.items():
        for i in range(n):
            _image(root / folder / f"img_{i}{suffix}")
    return root


def _check(bench: EvalSet, root: Path | None = None) -> list[tuple[int, ...]]:
    """Common invariants: JSON info, counts, samples sorted by relative path; returns the targets."""
    json.dumps(bench.info)
    assert bench.info["num_samples"] == len(bench.samples) > 0
    if root is not None:
        rel = [s.path.relative_to(root).as_posix() for s in bench.samples]
        assert rel == sorted(rel)
    return [s.targets for s in bench.samples]


# ---------------------------------------------------------------- class lists, dispatch


def test_published_200_class_lists():
    index = wnid_to_index()
    for wnids in (IMAGENET_A_WNIDS, IMAGENET_R_WNIDS):
        assert len(wnids) == 200 and len(set(wnids)) == 200 and set(wnids) <= set(index)
    # spot checks against the index lists published with the datasets' eval scripts
    assert [index[w] for w in IMAGENET_A_WNIDS[:6]] == [6, 11, 13, 15, 17, 22]
    assert [index[w] for w in IMAGENET_R_WNIDS[:8]] == [1, 2, 4, 6, 8, 9, 11, 13]
    assert index[IMAGENET_A_WNIDS[-1]] == index[IMAGENET_R_WNIDS[-1]] == 988
    assert len(SI_SCORE_CLASSES) == 61 and SI_SCORE_CLASSES["koala"] == 105
    assert imagenet_wnids()[0] == TENCH and len(imagenet_wnids()) == 1000


def test_unknown_name_and_missing_root(tmp_path):
    with pytest.raises(CftError, match="unknown evaluation set 'imagenet-x'.*imagenet-val, imagenet-v2"):
        load_eval_set("imagenet-x", tmp_path)
    with pytest.raises(CftError, match=r"imagenet-v2: .*does not exist; expected ROOT/<class index 0..999>"):
        load_eval_set("imagenet-v2", tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CftError, match="is not a folder"):
        load_eval_set("imagenet-a", tmp_path / "file")
    with pytest.raises(CftError, match=r"no class folders .*expected ROOT/<wnid>/<images>"):
        load_eval_set("imagenet-sketch", tmp_path)
    assert len(eval_set_names()) == 12 and eval_set_names()[-1] == "grouped"


# ---------------------------------------------------------------- ImageNet family


def test_imagenet_a_partial_tree_two_protocols(tmp_path):
    root = _tree(tmp_path / "imagenet-a", {A_LAST: 1, A_STINGRAY: 2})
    (root / "README.txt").write_text("readme")  # the release ships one; files at ROOT are ignored
    _image(root / ".cache" / "x.jpg")  # hidden folder ignored
    plain, full = load_eval_set("imagenet-a", tmp_path)  # the parent folder: unwrapped to imagenet-a/
    assert (plain.name, full.name) == ("imagenet-a", "imagenet-a:1000")
    assert _check(plain, root) == [(6,), (6,), (988,)] == _check(full, root)
    assert len(plain.allowed) == 200 and plain.allowed == tuple(sorted(wnid_to_index()[w] for w in IMAGENET_A_WNIDS))
    assert full.allowed is None and plain.num_classes == full.num_classes == 1000
    assert "200" in plain.info["protocol"] and "1000" in full.info["protocol"]
    assert plain.samples == load_eval_set("imagenet-a", root)[0].samples  # deterministic


def test_imagenet_r_labels_from_wnid(tmp_path):
    plain, full = load_eval_set("imagenet-r", _tree(tmp_path, {R_GOLDFISH: 2}, ".jpg"))
    assert _check(plain) == [(1,), (1,)] and len(plain.allowed) == 200 and 1 in plain.allowed
    assert full.samples == plain.samples and full.allowed is None


def test_200_class_datasets_refuse_other_wnids(tmp_path):
    robin = "n01558993"  # index 15: an ImageNet-A class, not an ImageNet-R one
    _tree(tmp_path, {robin: 1, TENCH: 1})
    with pytest.raises(CftError, match=f"{TENCH}.*not ImageNet-A class wnids"):
        load_eval_set("imagenet-a", tmp_path)
    with pytest.raises(CftError, match=f"{TENCH}, {robin} .*not ImageNet-R class wnids"):
        load_eval_set("imagenet-r", tmp_path)


def test_imagenet_sketch(tmp_path):
    root = _tree(tmp_path / "sketch", {TOILET_TISSUE: 1, TENCH: 2}, ".png")
    (bench,) = load_eval_set("imagenet-sketch", tmp_path)
    assert _check(bench, root) == [(0,), (0,), (999,)] and bench.allowed is None and bench.num_classes == 1000
    _tree(root, {"n99999999": 1})
    with pytest.raises(CftError, match="n99999999"):
        load_eval_set("imagenet-sketch", root)


def test_imagenet_v2(tmp_path):
    root = _tree(tmp_path / "imagenetv2-matched-frequency-format-val", {"999": 1, "0": 1, "17": 2}, ".jpeg")
    (bench,) = load_eval_set("imagenet-v2", tmp_path)
    assert _check(bench, root) == [(0,), (17,), (17,), (999,)] and bench.allowed is None
    _tree(root, {"1000": 1})
    with pytest.raises(CftError, match=r"1000 .*expected ROOT/<class index 0..999>/<images>"):
        load_eval_set("imagenet-v2", root)


def test_imagenet_val_class_folders(tmp_path):
    (bench,) = load_eval_set("imagenet-val", _tree(tmp_path, {TOILET_TISSUE: 1, "n01443537": 1}))
    assert _check(bench, tmp_path) == [(1,), (999,)] and bench.info["layout"] == "class folders"
    _tree(tmp_path, {"not_a_wnid": 1})
    with pytest.raises(CftError, match="not_a_wnid"):
        load_eval_set("imagenet-val", tmp_path)


def _val_images(root: Path, n: int = 3) -> list[str]:
    return [_image(root / f"ILSVRC2012_val_{i:08d}.JPEG").name for i in range(n, 0, -1)]


def test_imagenet_val_kaggle_csv(tmp_path):
    nested = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    names = sorted(_val_images(nested))
    rows = [("ImageId", "PredictionString")] + [
        (Path(n).stem, f"{w} 1 2 3 4 {w} 5 6 7 8") for n, w in zip(names, (TENCH, TOILET_TISSUE, "n01443537"))
    ]
    rows.append(("ILSVRC2012_val_00099999", f"{TENCH} 1 2 3 4"))  # a row without an image is fine
    with (tmp_path / "LOC_val_solution.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (bench,) = load_eval_set("imagenet-val", tmp_path)
    assert [s.path.name for s in bench.samples] == names and _check(bench) == [(0,), (999,), (1,)]
    _image(nested / "ILSVRC2012_val_00000077.JPEG")
    with pytest.raises(CftError, match="no row for image.*ILSVRC2012_val_00000077"):
        load_eval_set("imagenet-val", tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,Label\nx,y\n")
    with pytest.raises(CftError, match="LOC_val_solution.csv has no column 'PredictionString'"):
        load_eval_set("imagenet-val", tmp_path)


def test_imagenet_val_labels_txt(tmp_path):
    names = sorted(_val_images(tmp_path))
    labels = tmp_path / "val_labels.txt"
    labels.write_text(f"{TOILET_TISSUE}\n65\n\n0\n")  # wnids or indices, sorted file order; blank lines skipped
    (bench,) = load_eval_set("imagenet-val", tmp_path)
    assert [s.path.name for s in bench.samples] == names and _check(bench) == [(999,), (65,), (0,)]
    labels.write_text("".join(f"{n} {t}\n" for n, t in zip(reversed(names), (3, TENCH, 7))))
    assert _check(load_eval_set("imagenet-val", tmp_path)[0]) == [(7,), (0,), (3,)]
    labels.write_text("1\n2\n")
    with pytest.raises(CftError, match="has 2 labels but .* has 3 images"):
        load_eval_set("imagenet-val", tmp_path)
    labels.write_text("1\n2\n1000\n")
    with pytest.raises(CftError, match="'1000' is neither an ImageNet-1k wnid nor a class index"):
        load_eval_set("imagenet-val", tmp_path)
    labels.unlink()
    with pytest.raises(CftError, match="neither class folders nor a labels file"):
        load_eval_set("imagenet-val", tmp_path)
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n171\n")
    with pytest.raises(CftError, match="devkit ILSVRC2012_IDs"):
        load_eval_set("imagenet-val", tmp_path)


# ---------------------------------------------------------------- ObjectNet

ON_FOLDERS = {"alarm_clock": "Alarm clock", "banana": "Banana", "air_freshener": "Air freshener"}
ON_MAPPING = {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}  # Air freshener maps to none


def _objectnet(root: Path, devkit_files: bool = True, images_dir: bool = True) -> Path:
    maps = root / "mappings"
    maps.mkdir(parents=True)
    (maps / "folder_to_objectnet_label.json").write_text(json.dumps(ON_FOLDERS))
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps(ON_MAPPING))
    if devkit_files:  # labels in a shuffled "devkit" order, reached through pytorch_to_imagenet_2012_id.json
        from timm.data import ImageNetInfo

        texts = ImageNetInfo().label_descriptions()
        order = list(range(1000))
        random.Random(0).shuffle(order)  # line k holds the label of index order[k]
        (maps / "imagenet_to_label_2012_v2").write_text("".join(texts[i] + "\n" for i in order))
        ids = {str(index): line for line, index in enumerate(order)}
        (maps / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps(ids))
    _tree(root / "images" if images_dir else root, {"alarm_clock": 2, "banana": 1, "air_freshener": 2}, ".png")
    return root


@pytest.mark.parametrize("devkit_files", [True, False])
def test_objectnet_mapping(tmp_path, devkit_files):
    root = _objectnet(tmp_path / "objectnet-1.0", devkit_files)
    (bench,) = load_eval_set("objectnet", tmp_path)
    assert _check(bench, root / "images") == [(409, 530), (409, 530), (954,)]  # air_freshener skipped
    assert bench.allowed == (409, 530, 954) and bench.num_classes == 1000
    assert bench.info["num_mapped_classes"] == 2 and bench.info["num_skipped_folders"] == 1
    assert "red border" in bench.info["border"]
    assert ("2012" in bench.info["label_source"]) == devkit_files


def test_objectnet_without_images_folder_and_errors(tmp_path):
    root = _objectnet(tmp_path, images_dir=False)
    (bench,) = load_eval_set("objectnet", root)
    assert _check(bench, root) == [(409, 530), (409, 530), (954,)]
    _tree(root, {"unicorn": 1})
    with pytest.raises(CftError, match="unicorn.*folder_to_objectnet_label.json"):
        load_eval_set("objectnet", root)
    (root / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Banana": "bananas"}))
    with pytest.raises(CftError, match="'Banana' -> 'bananas' matches no ImageNet-1k label"):
        load_eval_set("objectnet", root)
    (root / "mappings" / "folder_to_objectnet_label.json").unlink()
    with pytest.raises(CftError, match="folder_to_objectnet_label.json is missing"):
        load_eval_set("objectnet", root)


# ---------------------------------------------------------------- SI-Score


def test_si_score_published_names(tmp_path):
    root = _tree(tmp_path / "location20_area02_min0pc", {"taxi": 1, "koala": 2}, ".jpg")
    (bench,) = load_eval_set("si-location", tmp_path)
    assert bench.name == "si-location" and _check(bench, root) == [(105,), (105,), (468,)]
    assert bench.allowed is None and bench.info["class_names"] == "built-in"
    (bench,) = load_eval_set("si-rotation", root)  # ROOT is the variant folder itself
    assert _check(bench) == [(105,), (105,), (468,)]
    _tree(root, {"dragon": 1})
    with pytest.raises(CftError, match="dragon"):
        load_eval_set("si-location", root)


def test_si_score_foreground_classes_csv(tmp_path):
    root = _tree(tmp_path / "object_size", {"my thing": 1, "koala": 1, TENCH: 1}, ".jpg")
    (root / "foreground_classes.csv").write_text("int,label\n5,my thing\n105,koala\n")
    (root / "metadata.csv").write_text("image_id,area\n0,0.1\n")
    (bench,) = load_eval_set("si-size", tmp_path)
    assert _check(bench, root) == [(105,), (5,), (0,)]
    assert bench.info["class_names"].endswith("foreground_classes.csv") and "metadata" in bench.info
    (root / "foreground_classes.csv").write_text("label\nkoala\n")
    with pytest.raises(CftError, match="foreground_classes.csv has no column 'int'"):
        load_eval_set("si-size", tmp_path)


# ---------------------------------------------------------------- ImageNet-Segmentation (.mat, HDF5 v7.3)


def test_imagenet_seg_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((5, 7), (6, 4))]
    masks = [rng.random(im.shape[:2]) > 0.5 for im in images]
    path = write_mat(tmp_path / "gtsegs_ijcv.mat", images, masks)
    (bench,) = load_eval_set("imagenet-seg", tmp_path)
    assert [(s.path, s.index, s.targets) for s in bench.samples] == [(path, 0, ()), (path, 1, ())]
    assert bench.info["num_samples"] == 2 and load_eval_set("imagenet-seg", path)[0].samples == bench.samples
    for sample, image, mask in zip(bench.samples, images, masks):
        got_image, got_mask = read_seg_item(sample.path, sample.index)
        assert got_image.dtype == np.uint8 and np.array_equal(got_image, image)
        assert got_mask.dtype == bool and np.array_equal(got_mask, mask)
    with pytest.raises(CftError, match="index 2 out of range"):
        read_seg_item(path, 2)


def test_imagenet_seg_bad_files(tmp_path):
    with pytest.raises(CftError, match=r"gtsegs_ijcv.mat does not exist"):
        load_eval_set("imagenet-seg", tmp_path)
    wrong = tmp_path / "wrong.mat"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("value/img", data=np.zeros((2, 1)))
    with pytest.raises(CftError, match=r"wrong.mat has no dataset 'value/img' of object references"):
        load_eval_set("imagenet-seg", wrong)
    text = tmp_path / "text.mat"
    text.write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(CftError, match=r"cannot read .*text.mat as a MATLAB v7.3"):
        load_eval_set("imagenet-seg", text)


# ---------------------------------------------------------------- Waterbirds

WB_ROWS = [  # img_filename, y, split, place
    ("001.Albatross/a1.jpg", 1, 0, 1),
    ("001.Albatross/a2.jpg", 1, 0, 1),
    ("001.Albatross/a3.jpg", 1, 0, 0),
    ("002.Sparrow/s1.jpg", 0, 0, 0),
    ("002.Sparrow/s2.jpg", 0, 1, 1),
    ("002.Sparrow/s3.jpg", 0, 2, 1),
    ("001.Albatross/a4.jpg", 1, 2, 0),
    ("002.Sparrow/s0.jpg", 0, 2, 0),
]


def _waterbirds(root: Path, rows=WB_ROWS, header=("img_id", "img_filename", "y", "split", "place", "place_filename")):
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, (name, y, split, place) in enumerate(rows, 1):
            writer.writerow([i, name, y, split, place, f"/b/bamboo_forest/{i}.jpg"][: len(header)])
            _image(root / name)
    return root


def test_waterbirds_splits_and_groups(tmp_path):
    root = _waterbirds(tmp_path / "waterbird_complete95_forest2water2")
    (test,) = load_eval_set("waterbirds", tmp_path)
    assert test.name == "waterbirds" and test.num_classes == 2 and test.allowed is None
    assert [(s.path.relative_to(root).as_posix(), s.targets, s.group) for s in test.samples] == [
        ("001.Albatross/a4.jpg", (1,), 2),
        ("002.Sparrow/s0.jpg", (0,), 0),
        ("002.Sparrow/s3.jpg", (0,), 1),
    ]
    assert test.info["train_group_sizes"] == {"0": 1, "1": 0, "2": 1, "3": 2} and test.info["split"] == "test"
    _check(test, root)
    (val,) = load_eval_set("waterbirds:val", root)
    assert val.name == "waterbirds:val" and [(s.targets, s.group) for s in val.samples] == [((0,), 1)]
    assert group_sizes(root) == {0: 1, 1: 0, 2: 1, 3: 2} and group_sizes(tmp_path, split=2) == {0: 1, 1: 1, 2: 1, 3: 0}


def test_waterbirds_bad_metadata(tmp_path):
    root = _waterbirds(tmp_path, header=("img_id", "img_filename", "y", "split"))
    with pytest.raises(CftError, match=r"metadata.csv has no column\(s\) place"):
        load_eval_set("waterbirds", root)
    root = _waterbirds(tmp_path / "b", rows=[("x.jpg", 2, 2, 0)])
    with pytest.raises(CftError, match=r"metadata.csv line 2: y = '2', expected one of \[0, 1\]"):
        group_sizes(root)
    root = _waterbirds(tmp_path / "c")
    (root / "002.Sparrow" / "s3.jpg").unlink()
    with pytest.raises(CftError, match="1 image.* missing: .*s3.jpg"):
        load_eval_set("waterbirds", root)
    with pytest.raises(CftError, match="metadata.csv does not exist"):
        load_eval_set("waterbirds", tmp_path / "c" / "001.Albatross")
