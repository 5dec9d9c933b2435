"""pairot: annotation-informed optimal transport between two single-cell RNA-seq studies.

Use it as ``import pairot as pr``: ``pr.pp`` prepares two studies (shared genes, pseudobulk
differential expression, highly variable genes), ``pr.tl`` holds the optimal-transport model,
``pr.pl`` the figures and ``pr.datasets`` small demo and simulated data.

The four submodules (and ``__version__``) are looked up on first use, so that ``import
pairot`` and the command line start at once (the submodules pull in JAX, scanpy and
matplotlib); the command line installs its signal handlers before any of that.
"""

import importlib
import logging
from typing import TYPE_CHECKING

logging.getLogger("pairot").addHandler(logging.NullHandler())

_SUBMODULES = ("datasets", "pl", "pp", "tl")
__all__ = ["datasets", "pl", "pp", "tl", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import datasets, pl, pp, tl


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pairot")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def __getattr__(name: str):
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    msg = f"module 'pairot' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*__all__, *(k for k in globals() if k.startswith("__"))})
