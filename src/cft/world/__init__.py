"""A synthetic world with exact ground truth: objects drawn from named parts on procedural backgrounds.

world = SyntheticWorld(WorldConfig(bias=0.95, seed=0))
train = world.split("train", 10_000)      # a torch Dataset; train[i]["part_masks"]["wheel"] ...
train.save("train.npz"); WorldSplit.load("train.npz")
"""

from cft.world._backgrounds import TEXTURES, BackgroundBank
from cft.world._sheet import contact_sheet
from cft.world.objects import CATEGORIES, Category
from cft.world.world import BIASED_SPLITS, SPLITS, SyntheticWorld, WorldConfig, WorldSplit, collate

__all__ = [
    "BIASED_SPLITS",
    "CATEGORIES",
    "SPLITS",
    "TEXTURES",
    "BackgroundBank",
    "Category",
    "SyntheticWorld",
    "WorldConfig",
    "WorldSplit",
    "collate",
    "contact_sheet",
]
