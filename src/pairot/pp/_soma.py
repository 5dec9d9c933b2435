"""SOMA experiments (the CELLxGENE Census's format) as studies: a
``tiledbsoma.ExperimentAxisQuery`` read in chunks of cells, like a backed file.

``tiledbsoma`` is an optional dependency (``pip install "pairot[soma]"``), imported only when
such a query is given.
"""

from __future__ import annotations


def is_soma_query(obj) -> bool:
    """Whether ``obj`` is a ``tiledbsoma.ExperimentAxisQuery`` (without importing tiledbsoma)."""
    return any(
        cls.__module__.split(".")[0] == "tiledbsoma" and cls.__name__ == "ExperimentAxisQuery"
        for cls in type(obj).__mro__
    )


def open_soma_study(query, name, chunk_size, counts, symbols, arguments):
    """The :class:`~pairot.pp._study.Study` of a SOMA query (not written yet)."""
    raise NotImplementedError("SOMA queries are not supported yet")
