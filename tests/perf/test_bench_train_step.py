"""benchmarks/bench_train_step.py at toy sizes: the interleaved and the phases modes run and report."""

from __future__ import annotations

import json

from tests.helpers.benchmarks import load_benchmark

TOY = ["--img-size", "16", "--patch", "8", "--depth", "2", "--embed-dim", "24", "--heads", "2", "--batch", "2"]
TOY += ["--num-classes", "5", "--steps", "2", "--warmup", "1", "--threads", "1"]


def _bench():
    return load_benchmark("bench_train_step")


def test_interleaved_rounds_report_every_step_type(tmp_path, capsys):
    out = tmp_path / "bench.json"
    steps = "plain,cft,reference,plain-rows"
    assert _bench().main([*TOY, "--run", steps, "--interleave", "2", "--json", str(out)]) == 0
    results = {r["step"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"plain", "cft", "reference", "plain-rows"}
    for r in results.values():
        assert len(r["round_medians_ms"]) == 2 and r["ms_per_step"] == min(r["round_medians_ms"]) > 0
    printed = capsys.readouterr().out
    assert "cft time <= 1.3x plain" in printed  # below 224 px: the 1.3x target
    assert "cft / plain-rows (both with the last block on the read rows)" in printed


def test_phases_time_the_library_pieces(capsys):
    assert _bench().main([*TOY, "--phases"]) == 0
    printed = capsys.readouterr().out
    for phase in ("forward (hooked, unfused)", "autograd.grad d score / d attentions", "rollout + normalise"):
        assert phase in printed
