"""`cft` command line, run in-process on a tiny random ViT (and once as the installed console script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import cft
from cft.cli import main

TINY_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3, "num_classes": 10}
TINY = [f"--model-arg={k}={v}" for k, v in TINY_ARGS.items()]
PANEL = (3 * 32 + 2 * 4, 32)  # three 32x32 panels and two 4-pixel gaps


def explain(tmp_path: Path, *args: str) -> int:
    return main(["explain", "--out", str(tmp_path / "out"), *TINY, *args])


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (60, 45), (30, 160, 90)).save(path)
    return path


def assert_clean_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err
    for needle in needles:
        assert needle in err, err
    return err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cft {cft.__version__}" == "cft 0.1.0"


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert_clean_error(capsys, "usage: cft")


def test_explain_a_file(tmp_path, image_file, capsys):
    assert explain(tmp_path, str(image_file)) == 0
    out = tmp_path / "out" / "photo_grad-rollout.png"
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == PANEL and png.mode == "RGB"
    captured = capsys.readouterr()
    line = captured.out.strip()
    assert line.startswith(str(out)) and "(predicted)" in line
    assert int(line.split("class ")[1].split()[0]) in range(10)
    assert "random weights" in captured.err and "--pretrained" in captured.err
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary files left behind


def test_explain_sample_and_target(tmp_path, capsys):
    assert explain(tmp_path, "--sample", "--target", "7", "--method", "rollout") == 0
    out = tmp_path / "out" / "sample_rollout.png"
    with Image.open(out) as png:
        assert png.size == PANEL
    assert "class 7 (target; predicted" in capsys.readouterr().out


@pytest.mark.parametrize("method", list(cft.METHODS))
def test_each_method(tmp_path, image_file, method):
    assert explain(tmp_path, str(image_file), "--method", method) == 0
    with Image.open(tmp_path / "out" / f"photo_{method}.png") as png:
        assert png.size == PANEL


def test_checkpoint_is_loaded(tmp_path, image_file, capsys):
    model = cft.load_model("vit_tiny_patch16_224", **TINY_ARGS)
    ckpt = cft.save_checkpoint(model, tmp_path / "tiny.safetensors")
    assert explain(tmp_path, str(image_file), "--checkpoint", str(ckpt)) == 0
    assert "random weights" not in capsys.readouterr().err
    first = (tmp_path / "out" / "photo_grad-rollout.png").read_bytes()
    assert explain(tmp_path, str(image_file), "--checkpoint", str(ckpt)) == 0
    assert (tmp_path / "out" / "photo_grad-rollout.png").read_bytes() == first  # same weights, same picture


def test_missing_image(tmp_path, capsys):
    assert explain(tmp_path, str(tmp_path / "nope.png")) == 2
    assert_clean_error(capsys, "cft: error:", "nope.png", "does not exist")


def test_not_an_image(tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    assert explain(tmp_path, str(text)) == 2
    assert_clean_error(capsys, "cft: error:", "cannot read image", "notes.png")


def test_truncated_image(tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    assert explain(tmp_path, str(cut)) == 2
    assert_clean_error(capsys, "cft: error:", "cut.png")


def test_no_image_at_all(tmp_path, capsys):
    assert explain(tmp_path) == 2
    assert_clean_error(capsys, "cft: error:", "--sample")


def test_unknown_method(tmp_path, image_file, capsys):
    assert explain(tmp_path, str(image_file), "--method", "magic") == 2
    assert_clean_error(capsys, "magic", "grad-rollout")


def test_unknown_model(tmp_path, image_file, capsys):
    assert main(["explain", "--out", str(tmp_path), "--model", "no_such_vit", str(image_file)]) == 2
    assert_clean_error(capsys, "cft: error:", "unknown model name 'no_such_vit'")


def test_non_vit_model(tmp_path, image_file, capsys):
    assert main(["explain", "--out", str(tmp_path), "--model", "resnet18", str(image_file)]) == 2
    assert_clean_error(capsys, "cft: error:", "unsupported model")


@pytest.mark.parametrize("target", ["10", "-1"])
def test_target_out_of_range(tmp_path, image_file, capsys, target):
    assert explain(tmp_path, str(image_file), "--target", target) == 2
    assert_clean_error(capsys, "cft: error:", f"--target {target}", "10 classes")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arg", "needle"),
    [("depth", "KEY=VALUE"), ("embed_dim=50", "cannot create model"), ("no_such_arg=1", "no_such_arg")],
)
def test_bad_model_arg(tmp_path, image_file, capsys, arg, needle):
    assert explain(tmp_path, str(image_file), "--model-arg", arg) == 2
    assert_clean_error(capsys, "cft: error:", needle)


def test_missing_checkpoint(tmp_path, image_file, capsys):
    assert explain(tmp_path, str(image_file), "--checkpoint", str(tmp_path / "none.safetensors")) == 2
    assert_clean_error(capsys, "cft: error:", "none.safetensors")


def test_two_images_with_one_stem(tmp_path, image_file, capsys):
    other = tmp_path / "sub" / "photo.png"
    other.parent.mkdir()
    Image.new("RGB", (20, 20)).save(other)
    assert explain(tmp_path, str(image_file), str(other)) == 2
    assert_clean_error(capsys, "cft: error:", "photo_grad-rollout.png")


def test_model_args_are_yaml():
    from cft.config import parse_model_args

    parsed = parse_model_args(["num_classes=10", "img_size=[64, 48]", "class_token=false", "drop_rate=0.1"])
    assert parsed == {"num_classes": 10, "img_size": [64, 48], "class_token": False, "drop_rate": 0.1}


def test_console_script_help():
    script = Path(sys.executable).parent / "cft"
    if not script.exists():
        script = shutil.which("cft")
    assert script, "the cft console script is not installed: pip install -e '.[dev]'"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: cft" in done.stdout and "explain" in done.stdout


def test_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "cft", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cft 0.1.0"
