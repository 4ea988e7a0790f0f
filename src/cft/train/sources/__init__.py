"""The data sources of `cft finetune` (`data.source`): each registers its builder with the dataclass of its `data:`
fields. The registry and the common fields live in `base`; the sources shipped with cft are `world` (the synthetic
world), `decoy` (Decoy-MNIST / Decoy-FashionMNIST) and `disk` (folder, waterbirds, grouped)."""

from cft.train.sources.base import (
    DATA_SOURCES,
    DataSection,
    FewShotSection,
    ImageSection,
    SourceData,
    SplitSection,
    register_data_source,
    section_class,
)

# registration order is the order every message lists the sources in
# isort: off
from cft.train.sources.world import WorldSection, make_world
from cft.train.sources.decoy import DecoySection
from cft.train.sources.disk import DiskSection, disk_sources

# isort: on
from cft.train.model import build_model

__all__ = [
    "DATA_SOURCES",
    "DataSection",
    "DecoySection",
    "DiskSection",
    "FewShotSection",
    "ImageSection",
    "SourceData",
    "SplitSection",
    "WorldSection",
    "build_model",
    "disk_sources",
    "make_world",
    "register_data_source",
    "section_class",
]
