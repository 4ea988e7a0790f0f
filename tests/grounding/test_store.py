"""The mask store and the grounding stage: exact round trips, resume after a kill, invalidation, corruption,
torchrun sharding, bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cft.concepts.bank import ConceptBank
from cft.data.folders import list_images
from cft.errors import CftError
from cft.grounding.build import build_masks, run_masks, shard
from cft.grounding.store import MaskStore
from tests.helpers.masks import CLASSES, FakeSegmenter, expected_mask, write_bank, write_tree
from tests.helpers.paths import ROOT, worker

WORKER = worker("masks_worker")


@pytest.fixture
def tree(tmp_path):
    ids = write_tree(tmp_path / "images")
    bank = write_bank(tmp_path / "bank.json")
    return tmp_path / "images", bank, ids


def _build(tree, out, segmenter, **kw):
    images, bank_path, _ = tree
    bank = ConceptBank.load(bank_path)
    items = list_images(images, list(bank.concepts))
    return build_masks(items, bank, segmenter, MaskStore(out), batch_size=2, **kw), items


def test_entries_hold_the_exact_masks_and_guidance(tree, tmp_path):
    result, items = _build(tree, tmp_path / "store", FakeSegmenter())
    assert result.made == 10 and result.skipped == 0
    store = MaskStore(tmp_path / "store")
    assert store.image_ids() == sorted(it.image_id for it in items)
    for item in items:
        image = np.asarray(Image.open(item.path).convert("RGB"))
        entry = store.read(item.image_id, verify=True)
        assert entry.names == CLASSES[item.label]
        union = np.zeros(image.shape[:2], bool)
        for k, name in enumerate(entry.names):
            want = expected_mask(image, name)
            assert np.array_equal(entry.concepts[k], want)
            assert entry.meta["concepts"][name]["fraction"] == pytest.approx(want.mean())
            assert entry.meta["concepts"][name]["score"] == 0.5
            union |= want
        assert entry.guidance.dtype == np.float32 and np.array_equal(entry.guidance, union.astype(np.float32))
        assert np.array_equal(store.guidance(item.image_id), (entry.guidance * 255).astype(np.uint8))
        assert entry.meta["class"] == item.label and entry.meta["size"] == list(image.shape[:2])


def test_weighted_guidance_uses_the_bank_weights(tmp_path):
    write_tree(tmp_path / "images", per_class=1)
    bank = write_bank(tmp_path / "bank.json")
    data = json.loads(bank.read_text())
    data["concepts"]["goldfish"][1]["weight"] = 0.25  # "tail"
    bank.write_text(json.dumps(data))
    loaded = ConceptBank.load(bank)
    items = list_images(tmp_path / "images", list(loaded.concepts))
    build_masks(items, loaded, FakeSegmenter(), MaskStore(tmp_path / "s"), mode="weighted")
    image = np.asarray(Image.open(tmp_path / "images/goldfish/img0.png").convert("RGB"))
    want = np.maximum(1.0 * expected_mask(image, "fin"), 0.25 * expected_mask(image, "tail"))
    assert np.allclose(MaskStore(tmp_path / "s").guidance("goldfish/img0.png") / 255, want, atol=0.5 / 255)


def test_rerun_skips_finished_entries(tree, tmp_path):
    _build(tree, tmp_path / "store", FakeSegmenter())
    again = FakeSegmenter()
    result, _ = _build(tree, tmp_path / "store", again)
    assert result.made == 0 and result.skipped == 10 and again.calls == 0


def test_resume_after_kill_loses_and_duplicates_nothing(tree, tmp_path):
    images, bank, ids = tree
    out, log = tmp_path / "store", tmp_path / "seg.log"
    args = [sys.executable, str(WORKER), str(images), str(bank), str(out), str(log)]
    killed = subprocess.run([*args, "3"], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr  # died abruptly after 3 batches of 2
    first = log.with_name("seg.log.rank0").read_text().split()
    assert len(first) == 6 and len(MaskStore(out).image_ids()) == 6
    # an interrupted write: masks on disk without their metadata, which is the commit
    store = MaskStore(out)
    orphan = ids[-1]
    npz, meta = store._paths(orphan)
    npz.parent.mkdir(parents=True, exist_ok=True)
    npz.write_bytes(b"half-written")
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    second = log.with_name("seg.log.rank0").read_text().split()[6:]
    assert len(second) == 4  # only the 4 unfinished images were segmented again
    assert sorted(first + second) == sorted(set(first + second))  # nothing twice
    assert store.image_ids() == ids
    index = json.loads((out / "index.json").read_text())
    assert index["entries"] == 10 and not index["missing"]
    for image_id in ids:
        store.read(image_id, verify=True)


def test_changed_bank_redoes_only_the_changed_class(tree, tmp_path):
    out = tmp_path / "store"
    _build(tree, out, FakeSegmenter())
    write_bank(tree[1], {"goldfish": ["fin", "tail"], "tabby cat": ["ear", "nose"]})
    seg = FakeSegmenter()
    result, _ = _build(tree, out, seg)
    assert result.made == 5 and result.redone == 5 and result.skipped == 5
    assert MaskStore(out).read("tabby cat/img0.png").names == ["ear", "nose"]
    # a changed segmenter threshold invalidates everything
    result, _ = _build(tree, out, FakeSegmenter(threshold=100))
    assert result.made == 10 and result.redone == 10


def test_object_mask_mode_prompts_with_the_class_name(tree, tmp_path):
    result, _ = _build(tree, tmp_path / "store", FakeSegmenter(), object_masks=True)
    assert MaskStore(tmp_path / "store").read("goldfish/img0.png").names == ["goldfish"]
    result, _ = _build(tree, tmp_path / "store", FakeSegmenter())  # concept mode: another key
    assert result.redone == 10


@pytest.mark.parametrize("damage", ["truncate-npz", "delete-npz", "garbage-json", "flip-a-byte"])
def test_corrupt_entry_is_detected_and_redone(tree, tmp_path, damage):
    out = tmp_path / "store"
    _build(tree, out, FakeSegmenter())
    store = MaskStore(out)
    npz, meta = store._paths("goldfish/img2.png")
    good = store.read("goldfish/img2.png")
    if damage == "truncate-npz":
        npz.write_bytes(npz.read_bytes()[:-7])
    elif damage == "delete-npz":
        npz.unlink()
    elif damage == "flip-a-byte":  # the same size: only the recorded checksum tells
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
    else:
        meta.write_text("{not json")
    with pytest.raises(CftError, match="goldfish/img2.png"):
        store.read("goldfish/img2.png", verify=True)
    seg = FakeSegmenter()
    result, _ = _build(tree, out, seg)
    assert result.made == 1 and result.redone == 1 and len(seg.segmented) == 1
    again = store.read("goldfish/img2.png", verify=True)
    assert np.array_equal(again.concepts, good.concepts)


def test_shards_are_disjoint_and_cover_everything(tree):
    images, bank, ids = tree
    items = list_images(images, list(CLASSES))
    for world_size in (1, 2, 3, 4):
        parts = [[it.image_id for it in shard(items, r, world_size)] for r in range(world_size)]
        flat = [i for p in parts for i in p]
        assert sorted(flat) == ids and len(set(flat)) == len(flat)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_cover_every_image_once(tree, tmp_path):
    images, bank, ids = tree
    out, log = tmp_path / "store", tmp_path / "seg.log"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), str(images), str(bank), str(out), str(log),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank = [log.with_name(f"seg.log.rank{r}").read_text().split() for r in (0, 1)]
    assert len(per_rank[0]) == 5 and len(per_rank[1]) == 5  # 10 images split evenly
    assert sorted(per_rank[0] + per_rank[1]) == sorted(set(per_rank[0] + per_rank[1]))
    assert MaskStore(out).image_ids() == ids
    assert json.loads((out / "index.json").read_text())["entries"] == 10


def test_unreadable_image_is_named(tree, tmp_path):
    images, bank, _ = tree
    (images / "goldfish" / "zz_broken.png").write_bytes(b"not a png")
    with pytest.raises(CftError, match="zz_broken.png"):
        run_masks(images, bank, FakeSegmenter(), tmp_path / "store", batch_size=2, progress=False, log=print)
    # what was finished before the bad image is kept
    assert MaskStore(tmp_path / "store").image_ids()


def test_unknown_class_folder(tree, tmp_path):
    images, bank, _ = tree
    (images / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(images / "zebra" / "a.png")
    with pytest.raises(CftError, match="'zebra' is neither a class of the concept bank nor an ImageNet wnid"):
        run_masks(images, bank, FakeSegmenter(), tmp_path / "store", progress=False)


def test_imagenet_wnid_folders_map_to_class_names(tmp_path):
    root = tmp_path / "images"
    (root / "n01443537").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "n01443537" / "x.JPEG")
    items = list_images(root, ["goldfish"])
    assert [(it.image_id, it.label) for it in items] == [("n01443537/x.JPEG", "goldfish")]


def test_wrong_mask_size_is_an_error(tree, tmp_path):
    class Shrinking(FakeSegmenter):
        def segment(self, images, phrases):
            return [{p: (m[::2], s) for p, (m, s) in r.items()} for r in super().segment(images, phrases)]

    with pytest.raises(CftError, match=r"mask for 'fin' on goldfish/img0.png but the image is \(24, 32\)"):
        _build(tree, tmp_path / "store", Shrinking())


def test_missing_entry_and_bad_ids(tmp_path):
    store = MaskStore(tmp_path)
    with pytest.raises(CftError, match="no masks for image 'a/b.png'"):
        store.guidance("a/b.png")
    with pytest.raises(CftError, match="relative path"):
        store.guidance("../escape.png")
    with pytest.raises(CftError, match="not a mask store"):
        store.description()


def test_masks_show_draws_a_sheet(tree, tmp_path, capsys):
    from cft.cli import main

    images, bank, ids = tree
    run_masks(images, bank, FakeSegmenter(), tmp_path / "store", progress=False)
    out = tmp_path / "sheet.png"
    assert main(["masks", "show", "--store", str(tmp_path / "store"), "--images", str(images), "--out", str(out)]) == 0
    sheet = Image.open(out)
    assert sheet.height == 8 * (160 + 18) and sheet.width == 5 * 164  # 8 rows; image, 3 concepts, guidance
    assert "8 entries" in capsys.readouterr().out
    assert main(["masks", "show", "--store", str(tmp_path / "nowhere"), "--images", str(images)]) == 2
    assert "not a mask store" in capsys.readouterr().err


def test_phrases_for_a_class_the_bank_lacks(tmp_path):
    """An ImageNet wnid folder whose class has no entry in the bank: a clear error, nothing written."""
    (tmp_path / "images" / "n01443537").mkdir(parents=True)  # goldfish
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "n01443537" / "a.png")
    bank = write_bank(tmp_path / "bank.json", {"tabby cat": ["ear"]})
    with pytest.raises(CftError, match="the concept bank has no class 'goldfish'"):
        run_masks(tmp_path / "images", bank, FakeSegmenter(), tmp_path / "store", progress=False)
    assert MaskStore(tmp_path / "store").image_ids() == []
