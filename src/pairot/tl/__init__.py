"""The optimal-transport model between a query and a reference study."""

from ._dataset_map import DatasetMap

__all__ = ["DatasetMap"]
