"""Fine-tune a tiny ViT with CFT under torchrun or alone: `python tests/helpers/ddp_worker.py RUN_DIR OUT.pt BATCH`
(used by tests/test_distributed.py). Float64 throughout, so one process and two agree to rounding."""

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.helpers`

from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective  # noqa: E402
from tests.helpers.models import tiny_vit  # noqa: E402


class Blobs(Dataset):
    def __init__(self, n: int = 20) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 48, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 7, (n,), generator=g)
        self.m = (torch.rand(n, 32, 48, generator=g) > 0.6).double()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i], "mask": self.m[i]}


def run(run_dir: str, batch: int, epochs: int = 2) -> torch.nn.Module:
    model = tiny_vit(dtype=torch.float64, seed=0)
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch, optim=OptimConfig(lr=1e-3), select_by="val_top1", progress=False,
        device="cpu", amp="none",
    )  # fmt: skip
    trainer = Trainer(model, build_objective(ObjectiveConfig(name="cft")), cfg, run_dir, default_collate)
    trainer.fit(Blobs(), Blobs(6))
    return model


if __name__ == "__main__":
    model = run(sys.argv[1], int(sys.argv[3]))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(model.state_dict(), sys.argv[2])
