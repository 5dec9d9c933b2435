"""The argument checks of ``AtlasMap`` (one clear error per problem, naming it and the fix)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
from anndata import AnnData

from ..._atlas_defaults import ATLAS_DEFAULTS
from ..._atlas_table import ROW_COLUMNS
from ...pp._validate import check_study_names
from .._dataset_map import DatasetMap
from . import _studies
from ._studies import is_path, study_path

#: The columns of the harmonized table besides the studies' (no study may be named so).
RESERVED = frozenset(ROW_COLUMNS)


def check_studies(studies, on_file=None) -> list[str]:
    """The study names, in order, after checking that ``studies`` is what
    :func:`pairot.pp.preprocess_studies` returns: preprocessed AnnData, or paths to their
    h5ad files (``out_dir=...``), or a mix. A file is read here, one at a time, checked and
    given to ``on_file(name, path, adata)`` (which keeps what the atlas needs of it), then
    released."""
    names = check_study_names(
        studies,
        what="preprocessed AnnData or h5ad path (pr.pp.preprocess_studies)",
        one_study="DatasetMap",
    )
    reserved = [name for name in names if name in RESERVED]
    if reserved:
        msg = (
            f"studies has the name(s) {reserved}, which harmonize() uses for its own columns "
            f"{sorted(RESERVED)}; rename those studies."
        )
        raise ValueError(msg)
    genes = {}
    for name in names:
        value = studies[name]
        if is_path(value):
            path = study_path(name, value)
            adata = _studies.read_study(name, path)
            where = f"studies[{name!r}] (the file {str(path)!r})"
        elif isinstance(value, AnnData):
            path, adata, where = None, value, f"studies[{name!r}]"
        else:
            msg = (
                f"studies[{name!r}] is a {type(value).__name__}, not an AnnData or the path "
                "(str or Path) of a preprocessed study's h5ad file."
            )
            raise TypeError(msg)
        _check_study(adata, where)
        genes[name] = adata.var_names.copy() if path is not None else adata.var_names
        if path is not None and on_file is not None:
            on_file(name, path, adata)
        del adata  # a file's study is released before the next is read
    first = genes[names[0]]
    for name in names[1:]:
        genes_ = genes[name]
        if len(genes_) != len(first) or not np.array_equal(np.asarray(genes_), np.asarray(first)):
            only_first = [g for g in first if g not in set(genes_)][:5]
            only_this = [g for g in genes_ if g not in set(first)][:5]
            order = "; the same genes in another order" if not only_first + only_this else ""
            msg = (
                f"studies {names[0]!r} and {name!r} have different genes ({len(first)} and "
                f"{len(genes_)}; e.g. only in {names[0]!r}: {only_first}, only in {name!r}: "
                f"{only_this}{order}): preprocess all studies in one call of "
                "pr.pp.preprocess_studies, which gives every study the same genes in one order."
            )
            raise ValueError(msg)
    return names


def _check_study(adata, where: str) -> None:
    info = adata.uns.get("pairot") if hasattr(adata, "uns") else None
    if not isinstance(info, Mapping) or "cell_type_key" not in info:
        msg = (
            f"{where} has no uns['pairot']['cell_type_key']: preprocess the studies together "
            "with pr.pp.preprocess_studies(studies, cell_type_column, sample_column) first "
            "(with out_dir=... it writes each study's h5ad file)."
        )
        raise ValueError(msg)
    key = info["cell_type_key"]
    if key not in adata.obs:
        msg = (
            f"{where}.obs has no column {key!r} (the cell-type column recorded in "
            f"uns['pairot']['cell_type_key']); available: {list(adata.obs.columns)[:10]}."
        )
        raise KeyError(msg)


_STEPS = {
    "init_geom": DatasetMap.init_geom,
    "init_problem": DatasetMap.init_problem,
    "solve": DatasetMap.solve,
}
#: Options that make no sense for every pair of an atlas.
_REFUSED = {
    "init_problem": {
        "a": "per-cell weights belong to one pair; an atlas uses marginals_distribution",
        "b": "per-cell weights belong to one pair; an atlas uses marginals_distribution",
    },
    "solve": {"progress": "use AtlasMap.solve(progress=...)"},
}


def check_options(step: str, options) -> dict:
    """The keyword options of ``DatasetMap.<step>`` for every pair: :data:`ATLAS_DEFAULTS`
    updated by a copy of those given."""
    if options is None:
        return dict(ATLAS_DEFAULTS[step])
    if not isinstance(options, Mapping):
        msg = (
            f"{step} must be a dict of DatasetMap.{step} keyword arguments or None, got "
            f"{type(options).__name__}; e.g. {step}={{'epsilon': 0.05}}."
        )
        raise TypeError(msg)
    options = dict(options)
    known = set(inspect.signature(_STEPS[step]).parameters) - {"self", "kwargs"}
    unknown = [key for key in options if key not in known]
    if unknown:
        msg = f"{step} has unknown option(s) {unknown}; DatasetMap.{step} takes {sorted(known)}."
        raise TypeError(msg)
    for key, why in _REFUSED.get(step, {}).items():
        if key in options:
            msg = f"{step}={{{key!r}: ...}} is not accepted by AtlasMap: {why}."
            raise ValueError(msg)
    return {**ATLAS_DEFAULTS[step], **options}


_UNMATCHED = {"tau_a": 0.95, "min_retained": 0.6, "max_mapping_ratio": 0.7}


def check_unmatched(options) -> dict | None:
    """The options of ``DatasetMap.unmatched_clusters`` (defaults filled), or None (off)."""
    if options is False:
        return None
    if options is None or options is True:
        return dict(_UNMATCHED)
    if not isinstance(options, Mapping) or set(options) - set(_UNMATCHED):
        msg = (
            f"unmatched must be True, False or a dict with keys among {sorted(_UNMATCHED)} "
            f"(the options of DatasetMap.unmatched_clusters), got {options!r}."
        )
        raise TypeError(msg)
    return {**_UNMATCHED, **dict(options)}


def check_pairs(pairs, reference, names: list[str]) -> list[tuple[str, str]]:
    """The pairs to fit, each (query, reference) once, in a deterministic order."""
    if pairs is not None and reference is not None:
        msg = "give pairs or reference, not both (reference=X is the star of pairs (s, X))."
        raise ValueError(msg)
    if reference is not None:
        if reference not in names:
            msg = f"reference={reference!r} is not a study; the studies are {names}."
            raise KeyError(msg)
        return [(name, reference) for name in names if name != reference]
    if pairs is None:
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        msg = f"pairs must be a list of (study, study) tuples, got {pairs!r}."
        raise TypeError(msg)
    out: list[tuple[str, str]] = []
    seen: set[frozenset] = set()
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or len(tuple(pair)) != 2:
            msg = f"pairs has the entry {pair!r}; each entry is a (study, study) tuple."
            raise TypeError(msg)
        a, b = tuple(pair)
        missing = [s for s in (a, b) if s not in names]
        if missing:
            msg = (
                f"pairs has the pair {(a, b)!r} with unknown studies {missing}; the studies "
                f"are {names}."
            )
            raise KeyError(msg)
        if a == b:
            msg = f"pairs has the pair {(a, b)!r}: a study is not paired with itself."
            raise ValueError(msg)
        key = frozenset((a, b))
        if key in seen:
            msg = (
                f"pairs has the pair {(a, b)!r} twice (in some direction); each pair is fitted "
                "once and read in both directions."
            )
            raise ValueError(msg)
        seen.add(key)
        out.append((a, b))
    if not out:
        msg = "pairs is empty; give at least one (study, study) pair, or None for all pairs."
        raise ValueError(msg)
    return out


ENGINES = ("auto", "local", "dask")


def check_engine(engine) -> str:
    """``AtlasMap.solve(engine=...)``: one of ``ENGINES``."""
    if not isinstance(engine, str) or engine not in ENGINES:
        msg = (
            f"engine must be one of {list(ENGINES)}, got {engine!r}: 'auto' runs the pairs on "
            "an active dask.distributed client when there is one, 'local' here, 'dask' on the "
            "client."
        )
        raise ValueError(msg)
    return engine
