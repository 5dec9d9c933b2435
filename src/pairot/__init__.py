"""pairot: annotation-informed optimal transport between two single-cell RNA-seq studies.

Use it as ``import pairot as pr``: ``pr.pp`` prepares two studies (shared genes, pseudobulk
differential expression, highly variable genes), ``pr.tl`` holds the optimal-transport model,
``pr.pl`` the figures and ``pr.datasets`` small demo and simulated data.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, tl

try:
    __version__ = version("pairot")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

logging.getLogger("pairot").addHandler(logging.NullHandler())

__all__ = ["datasets", "pl", "pp", "tl", "__version__"]
