"""The packaged recipes and `cft recipes` (ls, cp, validate): every recipe loads as its command loads it."""

from __future__ import annotations

from pathlib import Path

import pytest

import cft
from cft.cli import main
from cft.config import load_config_data, packaged_recipes, read_yaml, resolve_config, to_dict
from cft.demo import demo_config
from cft.errors import CftError

EXPECTED = {"demo", "world-pretrain", "world-cft", "imagenet/vit-b16", "imagenet/deit3-b16", "imagenet/dinov2-b14"}


def test_the_recipes_ship_in_the_package():
    recipes = packaged_recipes()
    assert EXPECTED <= set(recipes)
    package = Path(cft.__file__).parent
    assert all(p.is_file() and package / "recipes" in p.parents for p in recipes.values())
    assert resolve_config("world-cft") == resolve_config("world-cft.yaml") == recipes["world-cft"]


def test_ls_lists_every_recipe_with_its_kind(capsys):
    assert main(["recipes", "ls"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(packaged_recipes())
    assert lines["world-cft"] == "finetune" and lines["imagenet/vit-b16"] == "run" and lines["demo"] == "demo"


def test_cp_copies_and_never_overwrites(tmp_path, capsys):
    dest = tmp_path / "mine.yaml"
    assert main(["recipes", "cp", "world-cft", str(dest)]) == 0
    assert dest.read_bytes() == packaged_recipes()["world-cft"].read_bytes()
    dest.write_text("edited")
    assert main(["recipes", "cp", "world-cft", str(dest)]) == 2
    assert dest.read_text() == "edited"
    assert main(["recipes", "cp", "nope", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "no packaged recipe 'nope'" in err and "Traceback" not in err
    assert main(["recipes", "cp", "imagenet/vit-b16", str(tmp_path)]) == 0 and (tmp_path / "vit-b16.yaml").is_file()


@pytest.mark.parametrize("name", sorted(packaged_recipes()))
def test_every_packaged_recipe_validates(name, tmp_path, capsys):
    sets = []
    if name == "world-cft":  # its checkpoint is made by world-pretrain; any existing file passes the check
        checkpoint = tmp_path / "best.safetensors"
        checkpoint.write_bytes(b"")
        sets = [f"--set=model.checkpoint={checkpoint}"]
    assert main(["recipes", "validate", name, *sets]) == 0, capsys.readouterr().err
    assert "a valid" in capsys.readouterr().out


def test_validate_names_the_bad_field(tmp_path, capsys):
    assert main(["recipes", "validate", "world-pretrain", "--set", "train.optim.lr=fast"]) == 2
    assert main(["recipes", "validate", "world-pretrain", "--set", "data.concepts.source=llama"]) == 2
    assert main(["recipes", "validate", "imagenet/vit-b16", "--set", "seeds=[]"]) == 2
    assert main(["recipes", "validate", "demo", "--set", "finetune.epochs=many"]) == 2
    assert main(["recipes", "validate", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    for needle in ("train.optim.lr", "data.concepts.source", "seeds", "finetune.epochs", "missing.yaml"):
        assert needle in err, err
    assert "Traceback" not in err


def test_a_packaged_recipe_switches_objective_by_deleting_its_section(capsys):
    """The paired baseline of a packaged cft recipe: its objective section holds cft's fields, so naming another
    objective alone is refused (the field is named); `~finetune.objective` first deletes the section."""
    switch = ["--set", "finetune.objective.name=no-guidance"]
    assert main(["recipes", "validate", "imagenet/vit-b16", *switch]) == 2
    assert "objective.form is a setting of objective.name cft, not of no-guidance" in capsys.readouterr().err
    assert main(["recipes", "validate", "imagenet/vit-b16", "--set", "~finetune.objective", *switch]) == 0
    assert main(["recipes", "validate", "imagenet/vit-b16", "--set", "~finetune.objectiv"]) == 2
    assert "finetune.objectiv is not in the config" in capsys.readouterr().err


def test_the_packaged_demo_config_is_the_default():
    """demo.yaml lists every field at its default: loading it gives exactly demo_config()."""
    assert demo_config(load_config_data("demo")) == demo_config()
    listed = read_yaml(packaged_recipes()["demo"])
    assert listed.pop("kind") == "demo" and listed == to_dict(demo_config())  # every field, in its own order
    assert list(listed["finetune"]["objective"]) == list(to_dict(demo_config().finetune.objective))


def test_one_loader_reads_files_and_names_alike(tmp_path):
    path = Path(tmp_path / "r.yaml")
    path.write_text(packaged_recipes()["world-pretrain"].read_text())
    assert load_config_data(path, ["train.epochs=3"]) == load_config_data("world-pretrain", ["train.epochs=3"])


def test_the_packaged_decoy_benchmark_config_is_the_default():
    """decoy/benchmark.yaml lists every field at its default: loading it gives exactly decoy_bench_config()."""
    from cft.demo.decoy import decoy_bench_config

    assert decoy_bench_config(load_config_data("decoy/benchmark")) == decoy_bench_config()


def test_every_packaged_recipe_declares_its_kind():
    """The kind is the file's own `kind:` line (never guessed from keys), and a command refuses another kind."""
    from cft.config import RECIPE_KINDS

    kinds = {name: read_yaml(path).get("kind") for name, path in packaged_recipes().items()}
    assert all(kind in RECIPE_KINDS for kind in kinds.values()), kinds
    assert kinds["demo"] == "demo" and kinds["world-cft"] == "finetune" and kinds["imagenet/vit-b16"] == "run"
    assert kinds["decoy/benchmark"] == "decoy-demo"
    with pytest.raises(CftError, match="is a run recipe, not a finetune one; run it with `cft run`"):
        load_config_data("imagenet/vit-b16", kind="finetune")
