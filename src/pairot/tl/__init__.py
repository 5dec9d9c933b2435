"""The optimal-transport model between a query and a reference study."""

from ._answers._cell_mapping import transfer_labels
from ._atlas import AtlasMap
from ._dataset_map import DatasetMap

__all__ = ["AtlasMap", "DatasetMap", "transfer_labels"]
