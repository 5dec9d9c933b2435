"""``AtlasMap``: many studies, fitted pair by pair with ``DatasetMap``, harmonized into one
table of cell types (docs/method.md#many-studies-atlas).

A facade: each public method checks its arguments (``_checks``) and makes one call into the
pair fits (``_pair``), the store (``_store``) or the harmonization (``_harmonize``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._dataset_map import DatasetMap
from . import _checks as checks
from . import _dask, _harmonize, _store, _studies
from ._pair import PairResult, fit_pair

logger = logging.getLogger("pairot")


class AtlasMap:
    """Map the cell types of many studies onto each other, pair by pair, and harmonize them.

    Parameters
    ----------
    studies
        Study name -> preprocessed AnnData, as :func:`pairot.pp.preprocess_studies` returns
        (at least two, the same genes in the same order), or the path (``str`` or ``Path``)
        of its h5ad file, as ``preprocess_studies(..., out_dir=...)`` returns; the two kinds
        may be mixed. Never modified. A file is read once here, one at a time, to check it
        and keep its few facts (clusters, the cluster pairs its all-vs-all DE separates, its
        fingerprint), then released; each fit reads the pair's files again and releases
        them after it, so memory holds at most two file studies at a time, and
        :meth:`harmonize` reads none. The answers are those of the same studies in memory.
    out_dir
        A folder for each fitted pair's outputs (mapping in both directions, distance,
        no-match tables, ``pair.json``); a later :meth:`solve` with the same folder and
        parameters loads them instead of fitting again (resume). ``None``: in memory only.
        Needed by the dask engine (:meth:`solve`), which also writes in-memory studies to
        ``out_dir/studies/`` for its workers to read (a file study is read from its own
        file).
    init_geom, init_problem, solve
        Keyword options given to every pair's ``DatasetMap.init_geom``, ``init_problem`` and
        ``solve``, over the atlas's defaults: DatasetMap's, except
        ``label_distance_mode="robust"``, ``marginals_distribution="uniform"`` and
        ``tau_a = tau_b = 0.95`` (docs/method.md#many-studies-atlas; pass
        ``init_geom={"label_distance_mode": "pairot"}``, ``init_problem={
        "marginals_distribution": "balanced", "tau_a": 1, "tau_b": 1}`` for the published
        method per pair). Per-cell marginals (``a``, ``b``) are refused: they belong to one
        pair.
    unmatched
        The options of ``DatasetMap.unmatched_clusters`` for the no-match flags (``tau_a``,
        ``min_retained``, ``max_mapping_ratio``; ``None`` or ``True``: its defaults), or
        ``False`` to skip them (two solves fewer per pair; no link is then dropped by a flag).

    Examples
    --------
    >>> studies = pr.pp.preprocess_studies(raw, "cell_type", "sample_id")
    >>> atlas = pr.tl.AtlasMap(studies, out_dir="atlas")
    >>> atlas.solve()                      # every pair once
    >>> atlas.mapping("B", "A")            # either direction
    >>> table = atlas.harmonize()
    """

    def __init__(
        self,
        studies: Mapping[str, AnnData],
        *,
        out_dir: str | Path | None = None,
        init_geom: Mapping | None = None,
        init_problem: Mapping | None = None,
        solve: Mapping | None = None,
        unmatched: Mapping | bool | None = None,
    ):
        self._options = {
            "init_geom": checks.check_options("init_geom", init_geom),
            "init_problem": checks.check_options("init_problem", init_problem),
            "solve": checks.check_options("solve", solve),
            "unmatched": checks.check_unmatched(unmatched),
        }
        self._fingerprints: dict[str, str] = {}
        #: The facts kept of each study given as a file (its AnnData is not kept).
        self._files: dict[str, _studies.StudyFacts] = {}
        self.study_names = checks.check_studies(studies, self._keep_file_facts)
        #: Study name -> its AnnData, or the absolute Path of its h5ad file.
        self.studies = {
            name: self._files[name].path if name in self._files else studies[name]
            for name in self.study_names
        }
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._results: dict[tuple[str, str], PairResult] = {}
        # the last harmonization's arguments and (table, disagreements, links); any pair
        # fitted or loaded discards it, so harmonize, disagreements and links share one run
        self._harmonization: tuple | None = None
        #: What the last :meth:`solve` did per pair: ``"fitted"`` or ``"loaded"``.
        self.solve_log: dict[tuple[str, str], str] = {}

    def _keep_file_facts(self, name: str, path: Path, adata: AnnData) -> None:
        fingerprint = _store.study_fingerprint(adata)
        self._fingerprints[name] = fingerprint
        labels = adata.obs[adata.uns["pairot"]["cell_type_key"]].astype(str)
        self._files[name] = _studies.StudyFacts(
            path=path,
            clusters=_studies.clusters_of(adata),
            separated=_studies.separated_pairs(adata, self._options["init_geom"]),
            fingerprint=fingerprint,
            n_obs=int(adata.n_obs),
            n_vars=int(adata.n_vars),
            cluster_sizes={str(k): int(v) for k, v in labels.value_counts(sort=False).items()},
            params=dict(adata.uns["pairot"].get("params", {})),
        )

    def _load(self, name: str) -> AnnData:
        """Study ``name`` in memory: the AnnData given, or read from its file."""
        if name in self._files:
            logger.info("Study %r: reading %s.", name, self._files[name].path)
            return _studies.read_study(name, self._files[name].path)
        return self.studies[name]

    # ----------------------------------------------------------------- fitting
    def _record(self, a: str, b: str) -> dict:
        for name in (a, b):
            if name not in self._fingerprints:
                self._fingerprints[name] = _store.study_fingerprint(self.studies[name])
        return {
            "init_geom": _store.jsonable(self._options["init_geom"]),
            "init_problem": _store.jsonable(self._options["init_problem"]),
            "solve": _store.jsonable(self._options["solve"]),
            "unmatched": _store.jsonable(self._options["unmatched"]),
            "fingerprint_a": self._fingerprints[a],
            "fingerprint_b": self._fingerprints[b],
        }

    def solve(
        self,
        pairs=None,
        *,
        reference: str | None = None,
        progress: bool = True,
        engine: str = "auto",
    ):
        """Fit the pairs, each once (its first study as the query).

        Parameters
        ----------
        pairs
            ``None`` (default): every unordered pair ``(a, b)`` in study order, ``a`` before
            ``b``; or a list of ``(query, reference)`` tuples, each pair once.
        reference
            A study name: the star of pairs ``(s, reference)`` for every other study ``s``.
        progress
            A progress bar over the pairs, and (local engine) each solve's own bar.
        engine
            ``"auto"`` (default): on the workers of the active ``dask.distributed`` client
            when there is one, else here; ``"local"``: here, one pair after another, on this
            process' devices; ``"dask"``: on the active client (an error when there is none
            or ``distributed`` is not installed). The dask engine needs ``out_dir``: each
            pair still to fit is one task, whose worker reads the two studies from h5ad
            files (a backed study from its own file; an in-memory study written once to
            ``out_dir/studies/``), fits it on the worker's own devices and sends the small
            result back; each is written to ``out_dir`` as it arrives. Both engines give
            the same answers (docs/method.md#many-studies-atlas).

        Each pair is read in both directions from its one fit (see :meth:`mapping`). With
        ``out_dir``, a pair already stored there with the same parameters and studies is
        loaded instead of fitted; a finished pair is written at once, so an interrupted run
        (``KeyboardInterrupt``; with dask, pending tasks are then cancelled) loses at most the
        pairs in progress, and the next :meth:`solve` fits only the rest. ``solve_log`` says
        which pairs were ``"fitted"`` and which ``"loaded"``. Returns ``self``.
        """
        todo = checks.check_pairs(pairs, reference, self.study_names)
        engine = checks.check_engine(engine)
        engine, client = _dask.resolve_engine(engine, self.out_dir)
        self.solve_log = {}
        records = {} if self.out_dir is None else {pair: self._record(*pair) for pair in todo}
        to_fit = []
        for a, b in todo:
            result = None
            if self.out_dir is not None:
                result = _store.load_pair(self.out_dir, a, b, records[(a, b)])
            if result is None:
                to_fit.append((a, b))
            else:
                self._keep(result, "loaded")
        with tqdm(total=len(todo), desc="Pairs", disable=not progress, leave=False) as bar:
            bar.update(len(todo) - len(to_fit))

            def store(result: PairResult) -> None:
                if self.out_dir is not None:
                    _store.write_pair(self.out_dir, result, records[(result.a, result.b)])
                self._keep(result, "fitted")

            if engine == "dask" and to_fit:
                options = _dask.task_options(self._options)  # checked before any file is written
                names = sorted(
                    {name for pair in to_fit for name in pair}, key=self.study_names.index
                )
                paths = {
                    name: str(
                        self._files[name].path
                        if name in self._files
                        else _store.study_file(
                            self.out_dir, name, self.studies[name], self._fingerprints[name]
                        )
                    )
                    for name in names
                }
                _dask.run(client, to_fit, paths, options, store, bar)
            else:
                loaded: dict[str, AnnData] = {}  # the current pair's studies, nothing more
                for a, b in to_fit:
                    for name in [n for n in loaded if n not in (a, b)]:
                        del loaded[name]  # released before the next study is read
                    for name in (a, b):
                        if name not in loaded:
                            loaded[name] = self._load(name)
                    logger.info("Pair (%s, %s): fitting %s as query, %s as reference.", a, b, a, b)
                    store(fit_pair(loaded[a], loaded[b], a, b, self._options, progress))
                    bar.update()
                loaded.clear()
        # the pairs in the order asked for, whichever order they finished in
        self._results = {
            **{k: v for k, v in self._results.items() if k not in set(todo)},
            **{pair: self._results[pair] for pair in todo},
        }
        self.solve_log = {pair: self.solve_log[pair] for pair in todo}
        return self

    def _keep(self, result: PairResult, how: str) -> None:
        self._harmonization = None
        a, b = result.a, result.b
        self.solve_log[(a, b)] = how
        # the same pair fitted earlier the other way round is replaced
        self._results.pop((b, a), None)
        self._results[(a, b)] = result

    # ------------------------------------------------------------- the answers
    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The fitted pairs, as ``(query, reference)`` of their fit."""
        return list(self._results)

    def _pair(self, a: str, b: str) -> PairResult:
        for name in (a, b):
            if name not in self.studies:
                msg = f"{name!r} is not a study of this atlas; the studies are {self.study_names}."
                raise KeyError(msg)
        result = self._results.get((a, b)) or self._results.get((b, a))
        if result is None:
            fitted = (
                ", ".join(f"({x}, {y})" for x, y in self._results) or "none: call solve() first"
            )
            msg = f"the pair ({a}, {b}) is not fitted; fitted pairs: {fitted}."
            raise KeyError(msg)
        return result

    def mapping(self, a: str, b: str, method: str = "mean") -> pd.DataFrame:
        """The mapping of study ``a``'s clusters (rows, ``query``) onto ``b``'s (columns,
        ``reference``), in either direction of a fitted pair.

        ``method``: ``"mean"`` (default) or ``"transported_mass"``, with DatasetMap's
        meaning. For the direction of the fit it is ``DatasetMap(a, b).compute_mapping``;
        the other direction is read from the same plan: ``mapping(b, a, "mean")`` is
        ``mapping(a, b, "transported_mass")`` transposed, exactly (docs/method.md: the reverse
        reading). ``KeyError`` naming the fitted pairs when ``(a, b)`` is not one.
        """
        return self._pair(a, b).mapping(a, method)

    def distance(self, a: str, b: str) -> pd.DataFrame:
        """The distance between ``a``'s clusters (rows) and ``b``'s (columns): DatasetMap's
        ``compute_distance`` of the pair's fit, transposed for the other direction."""
        return self._pair(a, b).distance_from(a)

    def unmatched(self, a: str, b: str) -> pd.DataFrame:
        """The no-match flags of ``a``'s clusters against ``b`` (index ``cluster``; columns
        ``unmatched, score, retained, mapping_ratio, best_match, best_mapping, reason``).
        It is ``DatasetMap.unmatched_clusters("query")`` of the pair's fit for its query, and
        ``unmatched_clusters("reference")`` (the same rule mirrored) for its reference."""
        table = self._pair(a, b).unmatched(a)
        if table is None:
            msg = "the no-match flags were not computed (AtlasMap(..., unmatched=False))."
            raise ValueError(msg)
        return table

    def matches(
        self,
        a: str,
        b: str,
        threshold_mapping: float | None = 0.25,
        threshold_distance: float | None = 1.0,
    ) -> pd.DataFrame:
        """``DatasetMap.select_similar_clusters(..., output="table")`` of the direction
        ``a -> b`` (query ``a``)."""
        self._pair(a, b)  # KeyError for a pair not fitted
        return DatasetMap.select_similar_clusters(
            self.mapping(a, b),
            self.distance(a, b),
            threshold_mapping,
            threshold_distance,
            output="table",
        )

    def _clusters(self) -> dict[str, list[str]]:
        return {
            name: self._files[name].clusters
            if name in self._files
            else _studies.clusters_of(self.studies[name])
            for name in self.study_names
        }

    def _separated(self):
        geom = self._options["init_geom"]
        passing = {
            name: self._files[name].separated
            if name in self._files
            else _studies.separated_pairs(self.studies[name], geom)
            for name in self.study_names
        }

        def separated(study: str, x: str, y: str) -> bool:
            pairs = passing[study]
            return pairs is None or (x, y) in pairs or (y, x) in pairs

        return separated

    def harmonize(
        self,
        threshold_mapping: float = 0.25,
        threshold_distance: float | None = None,
        *,
        join: bool = True,
    ) -> pd.DataFrame:
        """One row per harmonized cell type, at the finest level any study resolves.

        Columns: one per study (its cluster for the row; ``"NONE"`` where it has none; a
        coarser cluster repeated in each finer row it covers; clusters of one study that are
        one type joined with ``" | "``), then ``relation`` (``"one-to-one"``, ``"split"``,
        ``"merge"``, ``"complex"``, ``"unique"``), ``group`` (the connected group of links),
        ``n_studies``, ``n_links`` (links among the row's clusters), ``n_tested`` (pairs of
        the row's clusters whose studies' pair was fitted), ``n_reciprocal`` (links that are
        reciprocal best matches), ``mean_mapping`` (mean over the
        links of the higher of the two directions' ``"mean"`` mapping), ``max_distance`` and
        ``joined`` (studies whose clusters were joined). The rule is in docs/method.md
        (many studies); :meth:`disagreements` and :meth:`links` give, for the same
        arguments, where the pairs disagree and every candidate link. ``attrs["params"]``
        holds the arguments and the pairs read (plain values only: pandas compares
        ``attrs`` when it joins frames, so no table is kept there).

        Parameters
        ----------
        threshold_mapping, threshold_distance
            Those of ``DatasetMap.select_similar_clusters`` for a link, in either direction.
            No distance threshold by default (``None``): with pairot's label distance a
            coarse cluster and each of its finer subtypes are as far apart (about 1.6 on the
            simulations) as unrelated types, because their marker lists differ, so the
            distance would cut every split and merge; the no-match flags guard against
            links of a type the other study lacks. ``1.0`` applies
            ``select_similar_clusters``' default.
        join
            Join clusters of one study that fall into rows differing only in them, when that
            study's DE finds no marker between them; ``False`` keeps every cluster apart.
        """
        table, disagreements, _ = self._harmonized(threshold_mapping, threshold_distance, join)
        if len(disagreements):
            logger.warning(
                "The pairs disagree in %d place(s); see AtlasMap.disagreements().",
                len(disagreements),
            )
        table.attrs["params"] = {
            "threshold_mapping": threshold_mapping,
            "threshold_distance": threshold_distance,
            "join": join,
            "pairs": [list(p) for p in self._results],
        }
        return table

    def _harmonized(self, threshold_mapping, threshold_distance, join: bool):
        """``(table, disagreements, links)`` of the harmonization (see :meth:`harmonize`)."""
        if not self._results:
            msg = "AtlasMap has no fitted pairs yet: call solve() first."
            raise ValueError(msg)
        key = (threshold_mapping, threshold_distance, bool(join))
        if self._harmonization is None or self._harmonization[0] != key:
            result = _harmonize.harmonize(
                self.study_names,
                self._clusters(),
                self._results,
                threshold_mapping=threshold_mapping,
                threshold_distance=threshold_distance,
                separated=self._separated() if join else None,
            )
            self._harmonization = (key, result)
        return tuple(frame.copy() for frame in self._harmonization[1])

    def disagreements(
        self,
        threshold_mapping: float = 0.25,
        threshold_distance: float | None = None,
        *,
        join: bool = True,
    ) -> pd.DataFrame:
        """Where the pairs disagree (columns ``kind, clusters, detail``): a no-match flag
        against a match passing the thresholds (``"flagged_but_matched"``; the link is
        dropped) and two clusters linked through a third that their own fitted pair does not
        link while neither has a partner in the other's study (``"not_transitive"``). The
        arguments are :meth:`harmonize`'s."""
        return self._harmonized(threshold_mapping, threshold_distance, join)[1]

    def links(
        self,
        threshold_mapping: float = 0.25,
        threshold_distance: float | None = None,
        *,
        join: bool = True,
    ) -> pd.DataFrame:
        """Every candidate link between two clusters of different studies that
        :meth:`harmonize` read, with both directions' mappings, the distance, the
        direction(s) passing the thresholds and the no-match flag (what
        :func:`pairot.pl.atlas` draws; ``links.csv`` of ``pairot atlas``). The arguments are
        :meth:`harmonize`'s."""
        return self._harmonized(threshold_mapping, threshold_distance, join)[2]
