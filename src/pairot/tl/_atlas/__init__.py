"""Many studies at once: ``AtlasMap`` fits ``DatasetMap`` pair by pair and harmonizes the
cell types of all studies.

A layer above the ``DatasetMap`` facade: it uses only DatasetMap's public methods (and the
studies' ``uns["pairot"]`` written by :func:`pairot.pp.preprocess_studies`), never the cost,
the engine or the answers below it (tests/test_architecture.py).

| file | holds |
| --- | --- |
| ``_checks.py`` | the argument checks of the atlas |
| ``_pair.py`` | one pair: the DatasetMap fit and its outputs read in both directions |
| ``_store.py`` | a pair's outputs on disk, the recorded parameters, resume, study files |
| ``_dask.py`` | the dask engine: one task per pair on an active ``distributed`` client |
| ``_harmonize.py`` | the links between all studies' clusters -> the harmonized rows |
| ``_atlas_map.py`` | ``AtlasMap``, the facade |
"""

from ._atlas_map import AtlasMap

__all__ = ["AtlasMap"]
