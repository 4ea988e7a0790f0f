"""`cft demo --quick` end to end, and its config errors."""

from __future__ import annotations

import json

import pytest

from cft.cli import main
from cft.demo import TEST_SPLITS, VARIANTS, demo_config
from cft.errors import CftError


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    for variant in VARIANTS:
        for split in TEST_SPLITS:
            cell = results["metrics"][variant][split]
            assert 0.0 <= cell["top1"] <= 1.0 and 0.0 <= cell["worst_group"] <= cell["top1"]
    assert results["seeds"] == [0]
    assert results["timings"]["total"] > 0
    assert (out / "report.md").read_text().startswith("# cft demo report")
    assert (out / "figures" / "accuracy.png").is_file() and (out / "figures" / "relevance_grid.png").is_file()
    assert (out / "config.yaml").is_file()
    # the original model is not changed by the fine-tuned variants
    first = results["per_seed"]["0"]["original"]["test-ood"]["top1"]
    assert results["metrics"]["original"]["test-ood"]["top1"] == first
    assert "test-ood" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"finetune": {"epochs": "many"}}, "finetune.epochs must be int"),
        ({"finetune": {"learning_rate": 1}}, "unknown key"),
        ({"world": {"bias": 2.0}}, "bias"),
        ({"world": {"colour": 1}}, "world"),
        ({"seeds": "zero"}, "seeds must be a list"),
    ],
)
def test_bad_demo_configs(overrides, match):
    with pytest.raises(CftError, match=match):
        demo_config(overrides)


def test_cli_reports_config_errors(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--set", "finetune.per_class=zero"]) == 2
    assert "per_class" in capsys.readouterr().err
