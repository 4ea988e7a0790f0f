"""Typed configs from YAML and overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from cft.config import from_dict, load_config, parse_overrides, save_config
from cft.errors import CftError


@dataclass
class Inner:
    name: str = "vit"
    lr: float = 1e-3
    size: tuple[int, int] = (32, 32)
    checkpoint: str | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    seed: int = 0
    flags: list[str] = field(default_factory=list)


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 0.5\n  name: deit\nseed: 3\n")
    cfg = load_config(Outer, path, ["inner.lr=2", "flags=[a, b]", "inner.size=[8, 16]"])
    assert cfg == Outer(Inner("deit", 2.0, (8, 16)), 3, ["a", "b"])
    assert isinstance(cfg.inner.lr, float)


def test_tilde_overrides_delete_keys_of_the_file_before_the_values_apply(tmp_path):
    """`~key` deletes key from the file (Hydra's syntax), whatever its place among the overrides: `~inner` then
    `inner.lr=2` replaces the section; a key that is not there, or a deletion with a value, is an error."""
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 0.5\n  name: deit\nseed: 3\n")
    assert load_config(Outer, path, ["inner.lr=2", "~inner"]) == Outer(Inner(lr=2.0), 3)
    assert load_config(Outer, path, ["~inner.name", "~seed"]) == Outer(Inner(lr=0.5), 0)
    for item, needle in (("~inner.size", "inner.size is not in the config"), ("~nope.x", "nope.x is not in"),
                         ("~seed=4", "a deletion is ~key.sub, without a value"), ("~", "without a value")):  # fmt: skip
        with pytest.raises(CftError, match=re.escape(needle)):
            load_config(Outer, path, [item])


def test_save_and_reload(tmp_path):
    cfg = Outer(Inner(checkpoint="x.safetensors"), seed=4)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["inner.learning_rate=1"], "unknown key.*config.inner"),
        (["seed=1.5"], "config.seed must be int"),
        (["seed=true"], "config.seed must be int"),
        (["inner.lr=fast"], "config.inner.lr must be a number"),
        (["inner.size=[1]"], "config.inner.size must have 2 items"),
        (["inner.name=3"], "config.inner.name must be str"),
        (["flags=notalist"], "config.flags must be a list"),
        (["seed"], "key.sub=value"),
        (["inner=3"], "config.inner must be a mapping"),
    ],
)
def test_bad_values_name_the_field(overrides, match):
    with pytest.raises(CftError, match=match):
        load_config(Outer, overrides=overrides)


def test_bad_files(tmp_path):
    with pytest.raises(CftError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(CftError, match="not valid YAML"):
        load_config(Outer, bad)
    bad.write_text("- a list\n")
    with pytest.raises(CftError, match="mapping"):
        load_config(Outer, bad)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=null"]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": None}


def test_floats_are_finite_and_bounded_fields_are_checked():
    """The one loader: .nan / .inf refused for every float field; `bounded` fields checked item by item."""
    from cft.config import bounded

    @dataclass
    class Section:
        plain: float = 1.0
        positive: float = bounded(1.0, gt=0)
        weights: list[float] = bounded([1.0, 2.0], ge=0)
        maybe: float | None = bounded(None, ge=0, le=1)
        nested: dict = field(default_factory=dict)

    assert from_dict(Section, {"positive": 2, "weights": [0, 3], "maybe": 1}).weights == [0.0, 3.0]
    for data, needle in [
        ({"plain": float("nan")}, "sec.plain must be a finite number, got nan"),
        ({"plain": float("-inf")}, "sec.plain must be a finite number"),
        ({"positive": 0}, "sec.positive must be a finite number > 0, got 0"),
        ({"weights": [1, -1]}, "sec.weights[1] must be a finite number >= 0, got -1"),
        ({"maybe": 1.5}, "sec.maybe must be a finite number >= 0 and <= 1"),
    ]:
        with pytest.raises(CftError, match=re.escape(needle)):
            from_dict(Section, data, "sec")
    assert Section().weights is not Section().weights  # a list default is copied per instance


def test_yaml_alias_bombs_are_refused_but_aliases_are_read():
    from cft.config import MAX_YAML_NODES, load_yaml

    assert load_yaml("a: &x [1, 2]\nb: *x\n", "t") == {"a": [1, 2], "b": [1, 2]}
    levels = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7)
    )  # 10^7 leaves
    with pytest.raises(CftError, match=f"t: its aliases expand to more than {MAX_YAML_NODES:,}"):
        load_yaml(levels, "t")
    with pytest.raises(CftError, match="t is not valid YAML"):
        load_yaml("a: [1,", "t")


def test_renamed_and_removed_keys_say_what_to_write():
    """A config written before a rename (or a removal) is told what to write, whatever section it is in."""
    from cft.pipeline import EvalStage
    from cft.train.trainer import TrainConfig

    with pytest.raises(CftError, match=r"evaluate\.benches was renamed: write eval_sets instead"):
        from_dict(EvalStage, {"benches": {"imagenet-v2": "/data"}}, "evaluate")
    with pytest.raises(CftError, match=r"train\.log_every_steps was removed \(.*\): delete it"):
        from_dict(TrainConfig, {"log_every_steps": 5}, "train")
    sets = {"imagenet-v2": "/data"}
    assert from_dict(EvalStage, {"eval_sets": sets}, "evaluate").eval_sets == sets
