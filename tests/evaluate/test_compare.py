"""cft.evaluate.compare (`cft compare`): paired differences of two results files against the formula."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from cft.cli import main
from cft.errors import CftError
from cft.evaluate.compare import compare_results, read_results

T_975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (3 runs)


def write_run(path, top1: dict[str, list[float]], n: int = 100, **extra) -> None:
    """A `cft run` results.json: per seed, per evaluation set, top1 (and top5 = top1 + 0.1)."""
    seeds = range(len(next(iter(top1.values()))))
    runs = {
        f"seed{s}": {name: {"top1": v[s], "top5": v[s] + 0.1, "n": n, **extra} for name, v in top1.items()}
        for s in seeds
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 2, "eval_sets": {}, "runs": runs, "seeds": list(seeds)}))


def test_the_paired_difference_against_the_formula(tmp_path):
    a = {"imagenet-a": [0.30, 0.34, 0.31], "imagenet-v2": [0.70, 0.71, 0.69]}
    b = {"imagenet-a": [0.28, 0.30, 0.30], "imagenet-v2": [0.70, 0.70, 0.70]}
    write_run(tmp_path / "a" / "results.json", a)
    write_run(tmp_path / "b" / "results.json", b)
    result = compare_results(read_results(tmp_path / "a"), read_results(tmp_path / "b" / "results.json"))
    assert result["pairs"] == [["seed0", "seed0"], ["seed1", "seed1"], ["seed2", "seed2"]]
    for name in a:
        diffs = [x - y for x, y in zip(a[name], b[name], strict=True)]
        cell = result["eval_sets"][name]
        assert cell["difference"]["per_run"] == pytest.approx(diffs)
        assert cell["difference"]["mean"] == pytest.approx(statistics.mean(diffs))
        half = T_975_DF2 * statistics.stdev(diffs) / math.sqrt(3)
        assert cell["difference"]["half_width"] == pytest.approx(half)
        assert cell["a"]["mean"] == pytest.approx(statistics.mean(a[name])) and cell["n"] == 100


def test_cft_evaluate_files_pair_by_position_and_other_metrics(tmp_path):
    def evaluate_file(path, values):
        runs = {f"ckpt{i}.safetensors": {"waterbirds": {"top1": v, "worst_group": v - 0.2, "n": 50}} for i, v in values}
        path.write_text(json.dumps({"benchmarks": {}, "runs": runs}))  # a results file of format 1

    evaluate_file(tmp_path / "a.json", [(0, 0.9), (1, 0.8)])
    evaluate_file(tmp_path / "b.json", [(5, 0.85), (6, 0.7)])
    result = compare_results(read_results(tmp_path / "a.json"), read_results(tmp_path / "b.json"), "worst_group")
    assert result["pairs"] == [["ckpt0.safetensors", "ckpt5.safetensors"], ["ckpt1.safetensors", "ckpt6.safetensors"]]
    assert result["eval_sets"]["waterbirds"]["difference"]["per_run"] == pytest.approx([0.05, 0.1])


def test_sets_that_cannot_be_compared_are_skipped_with_the_reason(tmp_path):
    write_run(tmp_path / "a" / "results.json", {"imagenet-a": [0.3, 0.4], "objectnet": [0.2, 0.3]}, top1_unseen=0.4)
    write_run(tmp_path / "b" / "results.json", {"imagenet-a": [0.3, 0.3]})
    runs = json.loads((tmp_path / "b" / "results.json").read_text())
    runs["runs"]["seed1"]["imagenet-a"]["top1_unseen"] = None  # undefined (no unseen classes), as written
    runs["runs"]["seed0"]["imagenet-a"]["top1_unseen"] = 0.5
    (tmp_path / "b" / "results.json").write_text(json.dumps(runs))
    result = compare_results(read_results(tmp_path / "a"), read_results(tmp_path / "b"))
    assert list(result["eval_sets"]) == ["imagenet-a"] and "not scored in run seed0" in result["skipped"]["objectnet"]
    with pytest.raises(CftError, match="top1_unseen is undefined"):
        compare_results(read_results(tmp_path / "a"), read_results(tmp_path / "b"), "top1_unseen")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("seeds", r"different seeds \(only in"),
        ("n", "not the same images"),
        ("partial", "is partial"),
        ("garbage", "is not a JSON results file"),
        ("missing", "does not exist"),
        ("metric", "no 'top2'"),
        ("demo", "is a cft demo's results"),
    ],
)
def test_a_comparison_that_would_not_be_paired_is_refused(tmp_path, change, needle):
    write_run(tmp_path / "a" / "results.json", {"imagenet-a": [0.3, 0.4]})
    b = tmp_path / "b" / "results.json"
    write_run(b, {"imagenet-a": [0.3, 0.4, 0.5] if change == "seeds" else [0.3, 0.3]}, n=99 if change == "n" else 100)
    if change == "partial":
        b.write_text(json.dumps({"partial": True, "runs": {"x": {}}}))
    elif change == "garbage":
        b.write_text("{not json")
    elif change == "missing":
        b.unlink()
    elif change == "demo":
        b.write_text(json.dumps({"per_seed": [], "paired": {}, "seeds": [0]}))
    with pytest.raises(CftError, match=needle):
        compare_results(read_results(tmp_path / "a"), read_results(b), "top2" if change == "metric" else "top1")


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    write_run(tmp_path / "a" / "results.json", {"imagenet-r": [0.5, 0.6, 0.7]})
    write_run(tmp_path / "b" / "results.json", {"imagenet-r": [0.4, 0.5, 0.5]})
    out = tmp_path / "cmp" / "a-vs-b.json"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    half = 100 * T_975_DF2 * statistics.stdev([0.1, 0.1, 0.2]) / math.sqrt(3)
    assert "| imagenet-r | 100 | 60.00 ± " in printed and f"| +13.33 ± {half:.2f} |" in printed
    written = json.loads(out.read_text())
    assert written["a"] == str(tmp_path / "a" / "results.json") and len(written["comparisons"]) == 1
    assert written["comparisons"][0]["eval_sets"]["imagenet-r"]["difference"]["n"] == 3
    # A against each further file, one table each; every file is read first, so a bad one writes nothing
    write_run(tmp_path / "c" / "results.json", {"imagenet-r": [0.5, 0.6, 0.7]})
    out.unlink()
    assert main(["compare", *(str(tmp_path / x) for x in ("a", "b", "c")), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| evaluation set |") == 2 and "| +0.00 ± 0.00 |" in printed  # a - c: the same scores
    assert [c["b"] for c in json.loads(out.read_text())["comparisons"]] == [
        str(tmp_path / x / "results.json") for x in ("b", "c")
    ]
    out.unlink()
    assert main(["compare", *(str(tmp_path / x) for x in ("a", "b", "nowhere")), "--out", str(out)]) == 2
    assert not out.exists() and "nowhere" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--level", "95"]) == 2
    assert "--level must be in (0, 1)" in capsys.readouterr().err


def test_run_folders_whose_training_images_differ_are_flagged(tmp_path, capsys):
    """Two cft run folders pair by seed; where a seed's few-shot images (seed<k>/images.txt) differ, the training
    is not paired and the comparison says so (the field and a note under the table)."""
    for name, second in (("a", "cat/2.png"), ("b", "cat/9.png")):
        write_run(tmp_path / name / "results.json", {"imagenet-v2": [0.5, 0.6]})
        for seed, images in ((0, "cat/1.png\n"), (1, f"cat/1.png\n{second}\n")):
            (tmp_path / name / f"seed{seed}").mkdir()
            (tmp_path / name / f"seed{seed}" / "images.txt").write_text(images)
    result = compare_results(read_results(tmp_path / "a"), read_results(tmp_path / "b"))
    assert result["training_images_differ"] == ["seed1"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "fine-tuned on other images in seed1" in capsys.readouterr().out
    (tmp_path / "b" / "seed1" / "images.txt").write_text("cat/1.png\ncat/2.png\n")
    assert compare_results(read_results(tmp_path / "a"), read_results(tmp_path / "b"))["training_images_differ"] == []


def test_checkpoints_named_by_seed_must_pair_seed_with_seed(tmp_path):
    """cft evaluate files pair by position; where the checkpoints' paths name their seeds, a pair of two seeds (the
    checkpoints given in another order) is refused instead of compared."""

    def evaluate_file(path, labels):
        runs = {label: {"imagenet-a": {"top1": 0.3 + i / 10, "n": 10}} for i, label in enumerate(labels)}
        path.write_text(json.dumps({"format": 2, "eval_sets": {}, "runs": runs}))

    evaluate_file(tmp_path / "a.json", ["runs/cft/seed0/best.safetensors", "runs/cft/seed1/best.safetensors"])
    evaluate_file(tmp_path / "b.json", ["runs/erm/seed1/best.safetensors", "runs/erm/seed0/best.safetensors"])
    with pytest.raises(CftError, match=r"puts runs/cft/seed0/best.safetensors \(seed 0\) with runs/erm/seed1"):
        compare_results(read_results(tmp_path / "a.json"), read_results(tmp_path / "b.json"))
    evaluate_file(tmp_path / "b.json", ["runs/erm/seed0/best.safetensors", "runs/erm/seed1/best.safetensors"])
    assert len(compare_results(read_results(tmp_path / "a.json"), read_results(tmp_path / "b.json"))["pairs"]) == 2
