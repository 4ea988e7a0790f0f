"""Faults are inputs too: non-finite weights and numbers, two writers, mixed mask stores, broken model folders, EXIF
photos, symlinks, unwritable outputs (real ones: a read-only or full tmpfs), a trickling server, alias bombs.

Every case asserts the exit status, the message, no traceback, and no partial or mixed output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cft
from cft.cli import main
from cft.errors import CftError
from cft.grounding.build import run_masks
from cft.grounding.store import MaskStore
from cft.models import save_checkpoint
from tests.helpers.masks import FakeSegmenter, write_bank, write_tree
from tests.helpers.paths import ROOT

TINY = ["--model-arg", "img_size=32", "--model-arg", "patch_size=8", "--model-arg", "depth=1"]
TINY_RECIPE = (
    "objective:\n  name: erm\ndata:\n  masks: none\n  world: {image_size: 32}\n  n_train: 20\n  n_val: 10\n"
    "model: {depth: 1}\ntrain:\n  epochs: 1\n"
)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)  # 10^9 leaves once expanded


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def finetune_args(config: Path, out: Path, *sets: str) -> list[str]:
    """`cft finetune` on `config` into `out`, with `--set` overrides."""
    return ["finetune", "--config", str(config), "--out", str(out), "--no-progress", *(f"--set={s}" for s in sets)]


def tiny_model(classes: int = 10) -> torch.nn.Module:
    return cft.load_model("vit_tiny_patch16_224", num_classes=classes, img_size=32, patch_size=8, depth=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    model = tiny_model()
    save_checkpoint(model, root / "good.safetensors")
    state = model.state_dict()
    save_checkpoint_state(
        {**state, "blocks.0.mlp.fc1.weight": torch.full_like(state["blocks.0.mlp.fc1.weight"], float("nan"))},
        root / "nan.safetensors",
    )
    huge = {**state, "norm.bias": torch.full_like(state["norm.bias"], 1e30)}  # finite weights, overflowing logits
    huge["head.weight"] = torch.full_like(state["head.weight"], 1e30)
    save_checkpoint_state(huge, root / "overflow.safetensors")
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(root / "img.png")
    (root / "tiny.yaml").write_text(TINY_RECIPE)
    (root / "folder.yaml").write_text(
        f"objective: {{name: erm}}\ndata: {{source: folder, masks: none, root: {root}}}\n"
    )
    (root / "val" / "n01440764").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 40 * k, np.uint8)).save(root / "val" / "n01440764" / f"{k}.png")
    return root


def save_checkpoint_state(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def evaluate_args(files: Path, out: Path, *checkpoints: str, classes: int = 1000) -> list[str]:
    args = ["evaluate", "--model", "vit_tiny_patch16_224", *TINY, "--model-arg", f"num_classes={classes}"]
    args += ["--bench", f"imagenet-val={files / 'val'}", "--out", str(out), "--no-progress", "--workers", "0"]
    return args + [a for c in checkpoints for a in ("--checkpoint", c)]


def thousand_way(files: Path, name: str, scale: float | None = None, nan: bool = False) -> str:
    """A 1000-class tiny checkpoint (the imagenet-val tree is 1000-way): finite, or with NaN, or an overflowing head."""
    path = files / name
    if not path.exists():
        torch.manual_seed(0)
        state = tiny_model(1000).state_dict()
        if scale is not None:  # finite weights whose logits overflow: features ~ scale, logits ~ scale^2
            state["norm.bias"] = torch.full_like(state["norm.bias"], scale)
            state["head.weight"] = torch.full_like(state["head.weight"], scale)
        if nan:
            state["norm.weight"] = state["norm.weight"] * float("nan")
        save_checkpoint_state(state, path)
    return str(path)


# ---- 1. finite or refused -------------------------------------------------------------------------------------
def test_evaluate_refuses_a_nan_checkpoint_naming_the_tensor(files, tmp_path, capsys):
    code, err = run(
        evaluate_args(files, tmp_path / "r.json", thousand_way(files, "nan1000.safetensors", nan=True)), capsys
    )
    assert code == 2 and "non-finite" in err and "tensor norm.weight" in err
    assert not (tmp_path / "r.json").exists()


def test_evaluate_stops_on_non_finite_logits_and_keeps_finished_scores(files, tmp_path, capsys):
    good, bad = thousand_way(files, "ok1000.safetensors"), thousand_way(files, "big1000.safetensors", scale=1e30)
    code, err = run(evaluate_args(files, tmp_path / "r.json", good, bad), capsys)
    assert code == 2 and "not finite for 3 of 3 images" in err and "big1000" in err
    kept = json.loads((tmp_path / "r.json").read_text())
    assert kept["partial"] is True and list(kept["runs"]) == [good]  # the finished checkpoint's scores are kept


def test_evaluate_checks_every_checkpoint_before_scoring_the_first(files, tmp_path, capsys):
    code, err = run(
        evaluate_args(
            files, tmp_path / "r.json", thousand_way(files, "ok1000.safetensors"), str(files / "none.safetensors")
        ),
        capsys,
    )
    assert code == 2 and "none.safetensors does not exist" in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "flag,value,needle",
    [("--std", "0,0,0", "--std[0] must be a finite number > 0"), ("--mean", "nan,nan,nan", "--mean[0] must be")],
)
def test_evaluate_normalisation_must_be_finite(files, tmp_path, capsys, flag, value, needle):
    code, err = run([*evaluate_args(files, tmp_path / "r.json"), flag, value], capsys)
    assert code == 2 and needle in err and not (tmp_path / "r.json").exists()


def test_explain_refuses_nan_weights_and_non_finite_logits(files, tmp_path, capsys):
    args = ["explain", str(files / "img.png"), *TINY, "--model-arg", "num_classes=10", "--out", str(tmp_path / "o")]
    code, err = run([*args, "--checkpoint", str(files / "nan.safetensors")], capsys)
    assert code == 2 and "blocks.0.mlp.fc1.weight" in err and "NaN/inf" in err
    code, err = run([*args, "--checkpoint", str(files / "overflow.safetensors")], capsys)
    assert code == 2 and "non-finite logits for 1 of 1 image" in err
    assert not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.world.pixel_noise=.nan", "data.world.pixel_noise must be a finite number"),
        ("data.world.shading=.inf", "data.world.shading must be a finite number"),
        # (tiny.yaml's objective is erm, whose settings have neither)
        ("objective={name: no-guidance, temperature: 0}", "objective.temperature must be a finite number > 0"),
        ("objective={name: cft, align_weight: -1}", "objective.align_weight must be a finite number >= 0"),
        ("folder.yaml:data.std=[0.5,0,0.5]", "data.std[1] must be a finite number > 0"),  # a disk source's field
        ("train.optim.lr=.nan", "train.optim.lr must be a finite number"),
    ],
)
def test_config_numbers_are_finite_and_in_range(files, tmp_path, capsys, override, needle):
    config, _, override = (
        override.rpartition(":") if override.startswith("folder.yaml:") else ("tiny.yaml", "", override)
    )
    code, err = run(finetune_args(files / config, tmp_path / "o", override), capsys)
    assert code == 2 and needle in err and not (tmp_path / "o").exists()


PROPOSE = ["concepts", "propose", "--classes", "cat", "--backend", "bank", "--bank", "x.json"]
VALIDATE = ["concepts", "validate", "--bank", "x.json"]


@pytest.mark.parametrize(
    "argv,flag,value",
    [(PROPOSE, "--temperature", "nan"), (PROPOSE, "--temperature", "-3"), (PROPOSE, "--timeout", "nan"),
     (PROPOSE, "--timeout", "0"), (VALIDATE, "--min-coverage", "1.5")],
)  # fmt: skip
def test_concepts_number_flags_are_checked_when_parsed(tmp_path, capsys, argv, flag, value):
    code = main([*argv, "--out", str(tmp_path / "b.json"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and f"argument {flag}: expected a finite number" in err and f"got {value!r}" in err
    assert "Traceback" not in err and not (tmp_path / "b.json").exists()


def test_finetune_refuses_a_nan_starting_checkpoint(files, tmp_path, capsys):
    from cft.world.model import WorldModelConfig

    world = tmp_path / "w.safetensors"
    model = WorldModelConfig(depth=1).create(10, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.bias"][0] = float("inf")
    save_checkpoint_state(state, world)
    code, err = run(finetune_args(files / "tiny.yaml", tmp_path / "o", f"model.checkpoint={world}"), capsys)
    assert code == 2 and "head.bias has 1 NaN/inf" in err


# ---- 2. one writer per output ---------------------------------------------------------------------------------
HOLD = (  # a second process that holds a folder's lock until it is killed
    "import sys, time; from cft.io import exclusive_folder; c = exclusive_folder(sys.argv[1]); c.__enter__(); "
    "print('held', flush=True); time.sleep(120)"
)


def hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_finetune_into_a_held_folder_is_refused_and_a_killed_holder_frees_it(files, tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold(out)
    try:
        code, err = run(finetune_args(files / "tiny.yaml", out), capsys)
        assert code == 2 and f"--out {out} is being written by another process (pid {holder.pid}" in err
        assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, err = run(finetune_args(files / "tiny.yaml", out), capsys)
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_second_masks_run_into_a_held_store_is_refused(tmp_path):
    write_tree(tmp_path / "images", per_class=2)
    write_bank(tmp_path / "bank.json")
    holder = hold(tmp_path / "store")
    try:
        with pytest.raises(CftError, match=f"is being written by another process \\(pid {holder.pid}"):
            run_masks(tmp_path / "images", tmp_path / "bank.json", FakeSegmenter(), tmp_path / "store", progress=False)
        assert not (tmp_path / "store" / "entries").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_second_cft_run_into_a_held_folder_is_refused(tmp_path, capsys):
    from cft.pipeline import run_pipeline

    holder = hold(tmp_path / "out")
    try:
        with pytest.raises(CftError, match="being written by another process"):
            run_pipeline(None, tmp_path / "out")  # refused before the recipe is looked at
        assert not (tmp_path / "out" / "recipe.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


# ---- 3. a store has one identity ------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path) -> Path:
    write_tree(tmp_path / "images", per_class=3)
    write_bank(tmp_path / "bank.json")
    run_masks(
        tmp_path / "images", tmp_path / "bank.json", FakeSegmenter(threshold=128), tmp_path / "store", progress=False
    )
    return tmp_path / "store"


def test_other_settings_into_an_existing_store_are_refused_until_redo(store, tmp_path):
    (tmp_path / "one.txt").write_text("goldfish/img0.png\n")
    before = {p: p.read_bytes() for p in (store / "entries").rglob("*.*")}
    with pytest.raises(CftError, match="made with other settings \\(segmenter.threshold: 128 -> 60\\).*--redo"):
        run_masks(
            tmp_path / "images",
            tmp_path / "bank.json",
            FakeSegmenter(threshold=60),
            store,
            image_list=tmp_path / "one.txt",
            progress=False,
        )
    assert {p: p.read_bytes() for p in (store / "entries").rglob("*.*")} == before  # nothing touched
    run_masks(
        tmp_path / "images",
        tmp_path / "bank.json",
        FakeSegmenter(threshold=60),
        store,
        image_list=tmp_path / "one.txt",
        progress=False,
        redo=True,
    )
    ids = MaskStore(store).image_ids()
    assert ids == ["goldfish/img0.png"]  # --redo removed the entries made with the old settings
    MaskStore(store).check_identity(ids)


def test_a_store_mixed_by_a_partial_rerun_is_refused_by_its_readers(store, tmp_path, capsys):
    bank = json.loads((tmp_path / "bank.json").read_text())
    bank["concepts"]["goldfish"].append({"name": "scale"})
    (tmp_path / "bank2.json").write_text(json.dumps(bank))
    (tmp_path / "one.txt").write_text("goldfish/img0.png\n")
    run_masks(
        tmp_path / "images",
        tmp_path / "bank2.json",
        FakeSegmenter(),
        store,
        image_list=tmp_path / "one.txt",
        progress=False,
    )
    ids = MaskStore(store).image_ids()
    with pytest.raises(CftError, match="2 of 6 entries were made with other settings or concepts"):
        MaskStore(store).check_identity(ids)  # goldfish/img1, img2 carry the old bank's key
    code, err = run(
        [
            "masks",
            "show",
            "--store",
            str(store),
            "--images",
            str(tmp_path / "images"),
            "--out",
            str(tmp_path / "s.png"),
        ],
        capsys,
    )
    assert code == 2 and "made with other settings" in err and not (tmp_path / "s.png").exists()
    (tmp_path / "r.yaml").write_text(f"data:\n  source: folder\n  root: {tmp_path / 'images'}\n")
    sets = ["model.name=vit_tiny_patch16_224", "model.kwargs={patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}",
            "data.image_size=32", "data.resize=36", "train.epochs=1", f"data.store={store}",
            "data.few_shot={per_class: 3, class_fraction: 1.0}"]  # fmt: skip
    code, err = run(finetune_args(tmp_path / "r.yaml", tmp_path / "run", *sets), capsys)
    assert code == 2 and "made with other settings or concepts" in err
    assert not (tmp_path / "run" / "state.pt").exists()


# ---- 4. segmenters that cannot work ---------------------------------------------------------------------------
def test_a_tokenizer_that_maps_every_phrase_alike_is_refused():
    from cft.grounding.hf_common import check_text_processor

    class Processor:
        @staticmethod
        def tokenizer(text):
            return {"input_ids": [49406, 49407]}  # what a tokenizer without its vocabulary gives every phrase

    with pytest.raises(CftError, match="maps different phrases to the same tokens"):
        check_text_processor(Processor(), "/models/clipseg", "model")


def test_truncated_and_pickled_weight_files_are_refused_naming_the_folder(tmp_path):
    from safetensors.torch import save_file

    from cft.grounding.hf_common import load_pretrained

    class Loader:
        @staticmethod
        def from_pretrained(path, local_files_only):
            raise AssertionError("must not be reached")

    save_file({"w": torch.zeros(100)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-40])
    with pytest.raises(CftError, match=f"weight file {tmp_path / 'model.safetensors'} cannot be read.*download"):
        load_pretrained(Loader, str(tmp_path), "model", True)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CftError, match=f"{tmp_path} holds pickled weights"):
        load_pretrained(Loader, str(tmp_path), "model", True)


# ---- 5. images as a person sees them --------------------------------------------------------------------------
def exif_photo(path: Path, orientation: int = 6) -> None:
    """A 30 x 20 (w x h) JPEG whose EXIF says: rotate 90 degrees clockwise to view (a phone held upright)."""
    image = Image.new("RGB", (30, 20), (200, 30, 30))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())


def test_exif_orientation_is_applied_in_every_stage_but_evaluation_sets(tmp_path):
    from cft.data.images import load_image

    exif_photo(tmp_path / "p.jpg")
    assert load_image(tmp_path / "p.jpg").size == (20, 30)  # upright
    assert load_image(tmp_path / "p.jpg", orient=False).size == (30, 20)  # raw, as published protocols read
    (tmp_path / "images" / "goldfish").mkdir(parents=True)
    exif_photo(tmp_path / "images" / "goldfish" / "p.jpg")
    write_bank(tmp_path / "bank.json")
    run_masks(tmp_path / "images", tmp_path / "bank.json", FakeSegmenter(), tmp_path / "store", progress=False)
    assert MaskStore(tmp_path / "store").read("goldfish/p.jpg").guidance.shape == (30, 20)  # masks of the upright photo


def test_walks_follow_symlinked_folders_once_and_report_what_they_skip(tmp_path, capsys):
    from cft.data.folders import list_images

    write_tree(tmp_path / "images", per_class=1)
    outside = tmp_path / "more"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "linked.png")
    Image.new("RGB", (8, 8)).save(outside / "anim.gif")
    (outside / "notes.txt").write_text("x")
    os.symlink(outside, tmp_path / "images" / "goldfish" / "more")
    os.symlink(tmp_path / "images" / "goldfish", outside / "loop")  # a link loop back up
    os.symlink(tmp_path / "nowhere.png", tmp_path / "images" / "goldfish" / "dangling.png")
    ids = [it.image_id for it in list_images(tmp_path / "images", ["goldfish", "tabby cat"])]
    assert ids == ["goldfish/img0.png", "goldfish/more/anim.gif", "goldfish/more/linked.png", "tabby cat/img0.png"]
    err = capsys.readouterr().err
    assert "skipped 3 file(s)" in err and "not an image format (.txt)" in err and "broken link" in err
    assert "already walked" in err


def test_a_legal_but_long_image_name_gets_a_store_entry_and_an_explanation(files, tmp_path, capsys):
    name = "x" * 240 + ".png"
    (tmp_path / "images" / "goldfish").mkdir(parents=True)
    Image.new("RGB", (24, 24), (250, 10, 10)).save(tmp_path / "images" / "goldfish" / name)
    write_bank(tmp_path / "bank.json")
    run_masks(tmp_path / "images", tmp_path / "bank.json", FakeSegmenter(), tmp_path / "store", progress=False)
    store = MaskStore(tmp_path / "store")
    assert store.image_ids() == [f"goldfish/{name}"] and store.read(f"goldfish/{name}").guidance.shape == (24, 24)
    code, err = run(
        ["explain", str(tmp_path / "images" / "goldfish" / name), *TINY, "--out", str(tmp_path / "o")], capsys
    )
    assert code == 0 and len(list((tmp_path / "o").glob("x*.png"))) == 1


# ---- 6. output faults: errors before the work, nothing lost ----------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """A real small file system, mounted read-write, that the test can fill or remount read-only."""
    mount = tmp_path / "fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_output_folder_is_an_error_before_any_work(files, tmpfs, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    cases = [
        finetune_args(files / "tiny.yaml", tmpfs / "run"),
        ["explain", str(files / "img.png"), *TINY, "--out", str(tmpfs / "o")],
        evaluate_args(files, tmpfs / "r.json"),
        [
            "concepts",
            "propose",
            "--classes",
            "cat",
            "--backend",
            "bank",
            "--bank",
            "x.json",
            "--out",
            str(tmpfs / "b.json"),
        ],
    ]
    for argv in cases:
        code, err = run(argv, capsys)
        assert code == 2 and "cannot be written: Read-only file system" in err, (argv[0], err)


def test_a_full_disk_keeps_the_last_good_state_and_says_no_space(files, tmpfs, capsys):
    out = tmpfs / "run"
    code, err = run(finetune_args(files / "tiny.yaml", out, "model.embed_dim=64", "train.epochs=3"), capsys)
    assert code == 1 and "No space left on device" in err and "finished work is kept" in err
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    for name in ("last.safetensors", "best.safetensors"):  # whatever was written is whole
        if (out / name).exists():
            cft.models.read_state_dict(out / name)
    if (out / "state.pt").exists():  # and a state is one that --resume can read
        assert torch.load(out / "state.pt", weights_only=True)["epoch"] >= 1


@pytest.mark.parametrize("where", ["file", "folder"])
def test_out_naming_the_wrong_kind_of_path(files, tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    if where == "file":
        code, err = run(finetune_args(files / "tiny.yaml", tmp_path / "f"), capsys)
        assert code == 2 and "is a file; it must be a folder" in err
    else:
        code, err = run(evaluate_args(files, tmp_path / "d"), capsys)
        assert code == 2 and "is a folder; it must name a file" in err


def test_an_os_error_at_write_time_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import cft.cli.explain as explain

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "x.png"))

    monkeypatch.setattr(explain, "fitting_name", no_space)
    code, err = run(["explain", "--sample", *TINY, "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.strip().splitlines()[-1:] == [
        f"cft: error: {tmp_path / 'o' / 'x.png'}: No space left on device; free some space and rerun the same "
        "command: finished work is kept"
    ]


# ---- 7. servers -----------------------------------------------------------------------------------------------
def test_timeout_is_a_deadline_for_a_trickling_server(serve):
    from cft.concepts.llm import Sampling
    from cft.concepts.llm_openai import OpenAIBackend
    from tests.helpers.chat_server import reply

    server = serve(lambda body, headers, i: reply("1. wheel\n2. door", trickle=0.05))  # ~10 s for the body
    llm = OpenAIBackend(server.url, "m", timeout=0.5, retries=0)
    start = time.monotonic()
    with pytest.raises(CftError, match="did not answer within the timeout of 0.5 s"):
        llm.complete([{"role": "user", "content": "x"}], Sampling(n=1))
    assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "url", ["http://host:abc/v1", "http://local host/v1", "ftp://host/v1", "http:///v1", "http://h/v1?x=1"]
)
def test_a_malformed_base_url_is_refused_when_given(url):
    from cft.concepts.llm_openai import OpenAIBackend

    with pytest.raises(CftError, match="must look like http"):
        OpenAIBackend(url, "m")


def test_undecodable_answers_are_not_cached(serve, tmp_path):
    from cft.concepts.llm import ResponseCache, Sampling
    from cft.concepts.llm_openai import OpenAIBackend
    from cft.concepts.propose import propose
    from tests.helpers.chat_server import reply

    raw = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "1. wh\xffel"}}]}'
    server = serve(lambda body, headers, i: reply(raw=raw))  # not UTF-8: decoded with U+FFFD
    llm = OpenAIBackend(server.url, "m", retries=0)
    cache = ResponseCache(tmp_path / "cache")
    propose(llm, ["car"], ("important",), Sampling(n=1), cache, 1, False)
    assert not list((tmp_path / "cache").glob("*.json"))


# ---- 8. configs, banks, recipes -------------------------------------------------------------------------------
def test_alias_bombs_are_refused_everywhere_yaml_is_read(files, tmp_path, capsys):
    (tmp_path / "recipe.yaml").write_text(
        TINY_RECIPE + "finetune_notes:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines())
    )
    code, err = run(finetune_args(tmp_path / "recipe.yaml", tmp_path / "o"), capsys)
    assert code == 2 and "aliases expand to more than 1,000,000 YAML nodes" in err
    (tmp_path / "bank.yaml").write_text(
        "cat: [ear]\nprovenance:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines())
    )
    code, err = run(
        [
            "concepts",
            "propose",
            "--classes",
            "cat",
            "--backend",
            "bank",
            "--bank",
            str(tmp_path / "bank.yaml"),
            "--out",
            str(tmp_path / "b.json"),
        ],
        capsys,
    )
    assert code == 2 and f"concept bank {tmp_path / 'bank.yaml'}: its aliases expand" in err
    flow = "{" + BOMB.strip().replace("\n", ", ") + "}"
    code, err = run(finetune_args(files / "tiny.yaml", tmp_path / "o", f"train.epochs={flow}"), capsys)
    assert code == 2 and "override 'train.epochs=" in err and "aliases expand" in err and not (tmp_path / "o").exists()


def test_recipes_declare_their_kind(files, tmp_path, capsys):
    code, err = run(["recipes", "validate", str(files / "tiny.yaml")], capsys)
    assert code == 2 and "declares no kind: add a top-level line `kind: finetune`" in err
    assert main(["recipes", "validate", str(files / "tiny.yaml"), "--kind", "finetune"]) == 0
    (tmp_path / "d.yaml").write_text("kind: demo\nseeds: [0]\n")
    code, err = run(finetune_args(tmp_path / "d.yaml", tmp_path / "o"), capsys)
    assert code == 2 and "is a demo recipe, not a finetune one; run it with `cft demo --config`" in err
    code, err = run(["recipes", "validate", str(tmp_path / "d.yaml"), "--kind", "run"], capsys)
    assert code == 2 and "declares kind demo, not --kind run" in err
    (tmp_path / "k.yaml").write_text("kind: train\n")
    code, err = run(["recipes", "validate", str(tmp_path / "k.yaml")], capsys)
    assert code == 2 and "kind must be one of finetune, run, demo, decoy-demo" in err


def test_image_size_must_be_a_multiple_of_the_patch_size(files, tmp_path, capsys):
    code, err = run(finetune_args(files / "tiny.yaml", tmp_path / "o", "data.world.image_size=36"), capsys)
    assert code == 2 and "image size 36 is not a multiple of the model's patch size 8" in err


@pytest.mark.parametrize("seen,needle", [([3, 1200], "names class 1200 but the model has 1000 outputs"),
                                         ([1.5], "seen_classes must be a non-empty list of class indices"),
                                         ([], "seen_classes must be a non-empty list")])  # fmt: skip
def test_split_class_ids_are_checked(files, tmp_path, capsys, seen, needle):
    (tmp_path / "split.json").write_text(json.dumps({"seen_classes": seen}))
    args = evaluate_args(files, tmp_path / "r.json", thousand_way(files, "ok1000.safetensors"))
    code, err = run([*args, "--split", str(tmp_path / "split.json")], capsys)
    assert code == 2 and needle in err and not (tmp_path / "r.json").exists()


def test_sigterm_ends_a_run_like_ctrl_c_and_keeps_its_state(files, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cft.cli", "finetune", "--config", str(files / "tiny.yaml"), "--out", str(out),
           "--no-progress", "--set", "train.epochs=200"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "cft: interrupted: finished work is kept" in err and "Traceback" not in err
    assert (out / "state.pt").is_file()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    resumed = subprocess.run(
        [*cmd[:-1], f"train.epochs={done + 1}", "--resume"], capture_output=True, text=True, cwd=ROOT
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == done + 1


def test_fitting_names_are_legal_distinct_and_stable():
    from cft.io import NAME_MAX, fitting_name, is_fitted

    assert fitting_name("img.png", ".json") == "img.png.json" and not is_fitted("img.png")
    a, b = fitting_name("é" * 200 + "a.png", ".json"), fitting_name("é" * 200 + "b.png", ".json")
    assert a != b and len(a.encode()) <= NAME_MAX and a.endswith(".json") and is_fitted(a[: -len(".json")])
    assert fitting_name("é" * 200 + "a.png", ".json") == a  # the same name every time
