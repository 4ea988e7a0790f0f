"""Typed configs from YAML and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cft.config import load_config, parse_overrides, save_config
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
