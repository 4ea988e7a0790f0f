"""torchrun fine-tuning: two processes (gloo, CPU) end with the weights one process gets on the same global batch,
relevance (autograd.grad inside the step) included."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.helpers.ddp_worker import run
from tests.helpers.models import tiny_vit
from tests.helpers.paths import ROOT, worker

WORKER = worker("ddp_worker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [8, 5])  # 5: the ranks get 3 and 2 images of each global batch
def test_two_processes_equal_one(tmp_path, batch):
    single = run(str(tmp_path / "single"), batch)
    out = tmp_path / "ddp.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), str(tmp_path / "ddp"), str(out), str(batch),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    start = tiny_vit(dtype=torch.float64, seed=0).state_dict()
    moved = max((single.state_dict()[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-4  # training really moved the weights
    for k, v in single.state_dict().items():
        assert torch.allclose(ddp[k], v, atol=1e-10, rtol=0), k
    # rank 0 alone wrote the metrics; the validation was sharded and summed: the same numbers as one process
    one = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "val_top1", "train_top1"):
            assert a[key] == pytest.approx(b[key], abs=1e-9), key
