"""benchmarks/gpu_check.py at toy sizes on the CPU: every check runs and reports (the GPU run is the same script)."""

from __future__ import annotations

import json
import math

from tests.helpers.benchmarks import load_benchmark


def _gpu_check():
    return load_benchmark("gpu_check")


def test_gpu_check_runs_tiny_on_cpu(tmp_path, capsys):
    gpu_check = _gpu_check()
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    steps = [r for r in rows if r["check"].startswith("step ")]
    assert len(steps) == 3 * 2 * 2  # plain / cft / reference x two batch sizes x fp32 / bf16
    assert all(r["ms"] > 0 and r["images_per_s"] > 0 for r in steps)
    device_vs_cpu, bf16_vs_fp32 = (r["max_abs_diff"] for r in rows if r["check"] == "relevance")
    assert device_vs_cpu == 0.0  # cpu against cpu: the same numbers
    assert math.isfinite(bf16_vs_fp32) and bf16_vs_fp32 < 0.2
    finetune = next(r for r in rows if r["check"] == "cft finetune")
    assert finetune["exit"] == 0 and math.isfinite(finetune["train_loss"])
    assert finetune["setting"].startswith("20 steps")
    evaluate = next(r for r in rows if r["check"] == "cft evaluate")
    assert evaluate["exit"] == 0 and evaluate["images_per_s"] > 0
    out = capsys.readouterr().out
    assert "| check | setting |" in out and "step cft" in out


def test_a_failing_check_is_a_row_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    gpu_check = _gpu_check()

    def broken(_size, _device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "relevance_rows", broken)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(tmp_path / "rows.json")]) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())
    failed = [r for r in rows if r.get("error")]
    assert [r["check"] for r in failed] == ["relevance"] and "illegal memory access" in failed[0]["error"]
    assert {r["check"] for r in rows} >= {"step cft", "cft finetune", "cft evaluate"}
