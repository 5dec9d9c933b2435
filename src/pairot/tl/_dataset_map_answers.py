"""The reading half of the ``DatasetMap`` facade: the answers read out of a solution.

``DatasetMap`` (``_dataset_map``) inherits these methods; each checks its arguments
(``_checks``) and makes one call into the answers (``_answers``: plan sums, mapping and
distance, per-cell mapping, matches, no-match flags) or, for ``bootstrap``, ``_bootstrap``.
It may import ``_checks``, ``_answers`` and ``_bootstrap``; never the engine or the cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _checks as checks
from ._answers import _cell_mapping, _matches, _novelty, _plan, _scores
from ._checks import StageError


class DatasetMapAnswers:
    """The outputs of a fitted :class:`~pairot.tl.DatasetMap` (its methods, documented there)."""

    # ----------------------------------------------------------------- outputs
    def _aggregate(self, rows=None, cols=None) -> dict:
        geom = self._require("geom")
        solution = self._require("solution")
        full = rows is None and cols is None
        if full and self._aggregates is not None:
            return self._aggregates
        out = _plan.plan_sums(
            geom,
            solution,
            rows=rows,
            cols=cols,
            progress=self._progress,
            block_memory_budget=self._block_memory_budget,
        )
        if full:
            self._aggregates = out
        return out

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return _scores.cluster_frame(values, self.query_clusters, self.reference_clusters)

    def compute_mapping(self, aggregation_method: str | None = "mean"):
        """Mapping scores: query clusters (rows) x reference clusters (columns).

        With ``tm_k(j)`` the plan mass that reference cell ``j`` receives from the cells of
        query cluster ``k``, ``a`` and ``b`` the query and reference marginals (see
        docs/method.md#outputs):

        - ``"mean"`` (default): ``M[k, c]`` = mean over the reference cells ``j`` of cluster
          ``c`` of ``tm_k(j) / b_j``, the share of cell j's incoming mass that comes from
          ``k``. Read it down a column: each column sums to 1 over the query clusters (when
          the reference marginal is enforced, ``tau_b=1``), and a score near 1 means the
          cells of reference cluster ``c`` receive their mass almost entirely from query
          cluster ``k``. With the default balanced marginals every cell of ``c`` has the same
          ``b_j``, and ``"mean"`` equals ``"transported_mass"`` times (reference clusters /
          query clusters); with uniform or user-given marginals the two differ.
        - ``"jensen_shannon"``: one minus the base-2 Jensen-Shannon distance between the
          profile ``tm_k(j) / b_j`` over all reference cells and the uniform profile on the
          cells of ``c`` (both normalized to sum 1). 1 when ``k``'s share lands only on
          ``c``'s cells and evenly there, 0 when it lands only outside ``c``.
        - ``"transported_mass"``: ``sum_{j in c} tm_k(j) / sum_{i in k} a_i``, the share of
          query cluster ``k``'s mass that goes to reference cluster ``c``. Read it along a
          row: each row sums to 1 (when the query marginal is enforced, ``tau_a=1``), and a
          score near 1 means the cells of ``k`` are transported almost entirely onto ``c``.
        - ``None``: all three, as a dict keyed by these names.

        Returns
        -------
        DataFrame (index ``query``, columns ``reference``), or a dict of them for ``None``.
        """
        aggregation_method = checks.check_aggregation_method(aggregation_method)
        geom = self._require("geom")
        problem = self._require("problem")
        methods = (
            checks.AGGREGATION_METHODS if aggregation_method is None else (aggregation_method,)
        )
        scores = _scores.mapping_scores(self._aggregate(), problem, geom, methods)
        out = {method: self._frame(values) for method, values in scores.items()}
        return out if aggregation_method is None else out[aggregation_method]

    def compute_distance(self, n_samples: int | None = None, random_state: int = 0):
        """Plan-weighted mean cost between each query and reference cluster, from 0 to 2.

        See docs/method.md#outputs.

        Exact over all cells by default; with ``n_samples``, over a seeded subsample of at most
        ``n_samples`` cells per cluster on each side.
        """
        geom = self._require("geom")
        self._require("solution")
        rows = cols = None
        if n_samples is not None:
            n_samples = checks.check_positive(n_samples, "n_samples", integer=True)
            rows, cols = _scores.subsample(geom, n_samples, random_state)
        values = _scores.distance_of(self._aggregate(rows, cols), geom, rows, cols)
        return self._frame(values)

    def compute_cell_mapping(self, side: str = "query") -> pd.DataFrame:
        """Each cell's distribution over the clusters of the other study, from the plan.

        For a query cell ``i`` and a reference cluster ``c``: ``p_i(c) = sum_{j in c} P_ij /
        sum_j P_ij``, the share of the cell's transported mass that lands on ``c``; for a
        reference cell ``j`` and a query cluster ``k`` (``side="reference"``): ``q_j(k) =
        sum_{i in k} P_ij / sum_i P_ij``. It is the conditional of the entropic plan, shaped
        by ``epsilon`` and the (balanced) marginals, not a classifier's probability (see
        docs/method.md#per-cell-mapping). The sums come from the same single pass over the
        plan as :meth:`compute_mapping` and :meth:`compute_distance` and are cached with
        them: after either, this costs no further pass.

        Parameters
        ----------
        side
            ``"query"`` (default): one row per query cell, one column per reference cluster;
            ``"reference"``: one row per reference cell, one column per query cluster.

        Returns
        -------
        DataFrame
            Indexed by the cell names (``adata1.obs_names`` or ``adata2.obs_names``, in
            order); columns (their name is the other side, ``"reference"`` or ``"query"``):
            one per cluster of the other side, the distribution (rows sum to 1); then
            ``best`` (Categorical over those clusters: the most probable one, the first in
            cluster order on ties), ``probability`` (its probability), ``entropy``
            (``-sum_c p(c) log p(c)``, natural log, in nats; 0 for a cell sent to one cluster)
            and ``entropy_normalized`` (entropy divided by ``log(number of clusters)``, in
            [0, 1]; 1 = spread evenly over all clusters).

        Notes
        -----
        A cell whose plan row (column) carries no mass at all, possible only with relaxed
        marginals (``tau < 1``) or float underflow, has NaN in every column and a missing
        ``best`` (logged at INFO). If a cluster is named like a summary column (``"best"``,
        ``"probability"``, ``"entropy"``, ``"entropy_normalized"``), every distribution
        column is prefixed with ``"p_"`` (``"p_best"``, ...), so names never clash; the
        clusters, in column order, are always ``frame["best"].cat.categories``.
        """
        side = checks.check_side(side)
        agg = self._aggregate()
        if "row_cluster" not in agg:  # cached by a pass without per-cell sums: redo it
            self._aggregates = None
            agg = self._aggregate()
        if side == "query":
            return _cell_mapping.side_cell_mapping(
                agg, side, self.adata1.obs_names, self.reference_clusters
            )
        return _cell_mapping.side_cell_mapping(
            agg, side, self.adata2.obs_names, self.query_clusters
        )

    def transfer_labels(
        self,
        adata: AnnData | None = None,
        *,
        side: str = "query",
        key_added: str = "pairot",
    ) -> AnnData:
        """A copy of a study with each cell's best cluster of the other study, its confidence,
        entropy and distribution (see :func:`pairot.tl.transfer_labels`).

        Parameters
        ----------
        adata
            The study to annotate (matched by cell name): by default the one given to this
            ``DatasetMap`` (``adata1`` for ``side="query"``, ``adata2`` otherwise); also the
            full study when the fit used a downsampled one (unfitted cells get NaN). Never
            modified.
        side
            Whose cells to annotate: ``"query"`` (with reference clusters) or
            ``"reference"`` (with query clusters).
        key_added
            Prefix of the ``obs`` / ``obsm`` / ``uns`` keys written.
        """
        side = checks.check_side(side)
        if adata is None:
            adata = self.adata1 if side == "query" else self.adata2
        return _cell_mapping.transfer_labels(
            adata, self.compute_cell_mapping(side), key_added=key_added
        )

    def best_cluster_shares(self, side: str = "query") -> pd.DataFrame:
        """Cells of each cluster counted by their best cluster of the other study.

        Returns a table with one row per cluster of ``side`` and one column per cluster of the
        other study: the number of cells whose ``best`` (:meth:`compute_cell_mapping`) is that
        cluster. Divide by the row sums for shares.
        """
        side = checks.check_side(side)
        own = self.query_labels if side == "query" else self.reference_labels
        other = "reference" if side == "query" else "query"
        return _cell_mapping.best_cluster_shares(own, self.compute_cell_mapping(side), side, other)

    def cell_mapping_summary(
        self,
        side: str = "query",
        *,
        split_share: float = 0.25,
        min_cells: int = 5,
    ) -> pd.DataFrame:
        """Per cluster, how its cells' best clusters of the other study are distributed, and
        whether the cluster splits.

        A cluster whose cells go, cell by cell, to two different clusters of the other study
        is a finding (a coarse annotation against a finer one, a mixed cluster): the cluster
        mapping averages it away. The rule: a cluster is ``split`` when the second most
        frequent best cluster among its cells holds at least ``split_share`` of them (default
        25%) and at least ``min_cells`` cells.

        Parameters
        ----------
        side
            ``"query"`` (default; query clusters over reference clusters) or
            ``"reference"``.
        split_share
            Share in (0, 1] of the second most frequent best cluster that flags a split.
        min_cells
            Minimum number of cells behind that second cluster (so that a handful of cells of
            a small cluster is no split).

        Returns
        -------
        DataFrame
            Indexed by cluster; columns ``n_cells``, ``n_mapped`` (cells with a best cluster),
            ``first``, ``first_share``, ``first_cells``, ``second``, ``second_share``,
            ``second_cells`` (the two most frequent best clusters, their shares of
            ``n_mapped`` and cell counts; missing when there is none) and ``split``. The full
            counts are :meth:`best_cluster_shares`.
        """
        split_share, min_cells = checks.check_split(split_share, min_cells)
        side = checks.check_side(side)
        own = self.query_labels if side == "query" else self.reference_labels
        return _cell_mapping.cluster_split_summary(
            own, self.best_cluster_shares(side), split_share=split_share, min_cells=min_cells
        )

    def bootstrap(
        self,
        n_bootstrap: int = 20,
        *,
        resample: tuple[str, ...] | str = ("cells", "samples"),
        confidence: float = 0.9,
        random_state: int = 0,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Confidence of each match: the mapping and the distance under resampling.

        See docs/method.md#confidence-of-each-match. Each of the ``n_bootstrap`` resamples
        draws, from its own seed ``[random_state, resample index]``:

        - ``"cells"``: within every cluster of both studies, as many cells as the cluster
          has, with replacement; the drawn cells enter the marginals with their
          multiplicities (the same problem as on the duplicated cells; the cell features are
          not recomputed);
        - ``"samples"``: within each study, its samples (donors) with replacement (a donor
          drawn twice contributes its pseudobulk profiles twice; a draw of one distinct
          donor is drawn again); limma is re-run on the drawn profiles, the AUROC columns of
          the original DE tables are kept, and the marker lists, the label distance and the
          label part of the cost are rebuilt with the parameters of :meth:`init_geom`.
          After ``init_geom(label_distance_mode="robust")`` the samples are not resampled
          (that label distance rests on the AUROC alone, which a donor resample keeps; an
          INFO log says so, and with ``resample="samples"`` alone the cells are resampled
          instead, with a warning).

        Each resample is solved again with the options of :meth:`solve` (from zero
        potentials) and aggregated into the ``"mean"`` mapping and the distance.

        Parameters
        ----------
        n_bootstrap
            Number of resamples, >= 2. Each costs about one solve plus one aggregation,
            plus limma and the label distance when samples are resampled.
        resample
            ``"cells"``, ``"samples"`` or both (default). A study's samples are resampled
            only when its ``uns["pairot"]`` holds the pseudobulk profiles (stored by
            :func:`pairot.pp.preprocess_adatas`) and it has at least 3 donors with
            profiles; otherwise a WARNING says why and its DE stays as it is (when neither
            study qualifies and only ``"samples"`` was asked for, the cells are resampled).
        confidence
            Share of the resampled values inside each interval, in (0, 1): the interval is
            from the ``(1 - confidence) / 2`` to the ``(1 + confidence) / 2`` quantile of
            the resampled values (percentile intervals).
        random_state
            Seed, an integer >= 0; the same seed gives the same table.
        progress
            Show a tqdm progress bar over the resamples (Ctrl-C stops between two).

        Returns
        -------
        A long DataFrame, one row per (query cluster, reference cluster), in the order of
        the mapping's rows, then columns: ``query, reference, mapping, mapping_low,
        mapping_high, distance, distance_low, distance_high, top_share``. ``mapping`` and
        ``distance`` are the point estimates of the full solve (``compute_mapping()``,
        ``compute_distance()``); ``*_low`` / ``*_high`` the interval bounds; ``top_share``
        the share of resamples in which this reference cluster has the query cluster's
        highest mapping. ``attrs`` records ``n_bootstrap``, ``confidence``,
        ``random_state``, ``resample`` (what was resampled), ``samples_resampled`` (whose
        donors) and ``n_not_converged``. The table is also kept as
        :attr:`bootstrap_results` (for ``select_similar_clusters(..., intervals=...)``).

        The intervals describe the variability of the estimates when the cells and the
        donors are resampled, given the annotations and the method. They are not p-values,
        their coverage is not calibrated, and they contain neither annotation errors nor the
        effect of choosing ``epsilon``, the HVGs or the thresholds.
        """
        from ._bootstrap import bootstrap

        n_bootstrap, resample, confidence, random_state, progress = checks.check_bootstrap(
            n_bootstrap, resample, confidence, random_state, progress
        )
        return bootstrap(
            self,
            n_bootstrap,
            resample=resample,
            confidence=confidence,
            random_state=random_state,
            progress=progress,
        )

    @property
    def bootstrap_results(self) -> pd.DataFrame:
        """The table of the last :meth:`bootstrap` of the current solution;
        :class:`StageError` before it (or after a new ``solve``)."""
        state = getattr(self, "_bootstrap_state", None)
        if state is None or self.ot_solution is None or state[0] is not self.ot_solution:
            msg = "DatasetMap has no bootstrap yet: call bootstrap() first (after solve())."
            raise StageError(msg)
        return state[1]

    @staticmethod
    def select_similar_clusters(
        mapping: pd.DataFrame,
        distance: pd.DataFrame,
        threshold_mapping: float | None = 0.25,
        threshold_distance: float | None = 1.0,
        n_top: int | None = None,
        *,
        output: str = "dict",
        unmatched: pd.DataFrame | None = None,
        intervals: pd.DataFrame | None = None,
    ) -> dict[str, list[str]] | pd.DataFrame:
        """Suggested matches: for each query cluster, the reference clusters with mapping >=
        ``threshold_mapping`` and distance <= ``threshold_distance``, best mapping first (at
        most ``n_top`` each).

        With the default ``"mean"`` mapping, a match (q, r) says that the cells of reference
        cluster r receive at least ``threshold_mapping`` of their mass, on average, from query
        cluster q, and that the plan-weighted mean cost between the two clusters is at most
        ``threshold_distance`` (see docs/method.md#outputs). A query cluster can have several
        matches (it spreads over several reference clusters) or none.

        Parameters
        ----------
        mapping, distance
            Outputs of :meth:`compute_mapping` (one method) and :meth:`compute_distance`, with
            the same rows and columns.
        threshold_mapping, threshold_distance
            The thresholds; ``None`` applies none (upstream pairOT's meaning): with both
            ``None`` every pair is listed, ranked by mapping.
        n_top
            At most this many matches per query cluster; ``None`` for all.
        output
            ``"dict"`` (default, upstream pairOT's contract): ``{query cluster: [reference
            clusters, best first]}`` with every query cluster as a key, in the mapping's row
            order (an empty list when nothing passes). ``"table"``: the long table below,
            with the scores and the rank of every match (what pairot's own pipeline, report
            and command line use).
        unmatched
            The output of :meth:`unmatched_clusters`; needs ``output="table"`` (with the
            dict it is a ``ValueError``: a list of names has no room for it). The table then gets
            two more columns, ``unmatched`` (the flag of the row's query cluster) and
            ``reason`` (its sentence for flagged clusters, ``""`` otherwise), and every
            flagged query cluster without a passing match gets one row with ``reference``
            ``None``, ``mapping`` and ``distance`` NaN and ``rank`` 0, so that it is listed.
            ``None`` (default): the table as without it.
        intervals
            The table of :meth:`bootstrap` (e.g. ``dataset_map.bootstrap_results``); needs
            ``output="table"`` (``ValueError`` with the dict). Adds its columns ``mapping_low,
            mapping_high, distance_low, distance_high, top_share`` to the table, matched by
            (query, reference).

        Returns
        -------
        By default the dict described under ``output``. With ``output="table"`` a long table
        with columns ``query, reference, mapping, distance, rank``; ``rank`` counts the
        matches of each query cluster from 1 (1 = its best match; see
        docs/method.md#rank-convention).

        Examples
        --------
        >>> matches = pr.tl.DatasetMap.select_similar_clusters(mapping, distance)
        >>> best = {query: refs[0] for query, refs in matches.items() if refs}  # upstream's use
        >>> table = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="table")
        """
        threshold_mapping, threshold_distance, n_top = checks.check_matches(
            mapping,
            distance,
            threshold_mapping,
            threshold_distance,
            n_top,
            output,
            unmatched,
            intervals,
        )
        return _matches.select_matches(
            mapping,
            distance,
            threshold_mapping,
            threshold_distance,
            n_top,
            output=output,
            unmatched=unmatched,
            intervals=intervals,
        )

    def unmatched_clusters(
        self,
        side: str = "query",
        *,
        tau_a: float = 0.95,
        min_retained: float = 0.6,
        max_mapping_ratio: float = 0.7,
    ) -> pd.DataFrame:
        """Flag the query clusters whose cell type the reference lacks ("no match").

        The balanced plan sends every query cluster somewhere, so a missing type still has a
        best reference cluster. Two figures tell it apart
        (docs/method.md#unmatched-query-clusters):

        - ``retained``: the problem is solved again with the query marginal relaxed
          (``tau_a``, unbalanced OT; ``tau_b`` and the marginals as set by
          :meth:`init_problem`), and each query cluster's share of the transported mass is
          divided by its share of the marginal ``a``. About 1 for a matched cluster (a bit
          above when another cluster sheds mass); low when its cells find no partner worth
          their cost.
        - ``mapping_ratio``: its best ``"mean"`` mapping over the median best mapping of the
          other query clusters. About 1 for the main source of a reference cluster; low when
          it only takes what the main source leaves.

        A cluster is flagged when ``retained < min_retained`` **and** ``mapping_ratio <
        max_mapping_ratio``. Either alone misfires on a missing type close to a reference
        type: its sibling query cluster then competes for the same reference cells and also
        sheds mass when relaxed, but it stays that cluster's main source (calibration:
        benchmarks/bench_novelty.py and benchmarks/README.md).

        ``side="reference"`` flags the reference clusters instead, by the same rule mirrored
        on the same fit: the extra solve relaxes the reference marginal (``tau_b`` set to
        ``tau_a``, ``tau_a`` as fitted); ``retained`` is a reference cluster's share of the
        plan's mass over its share of ``b``; ``mapping_ratio`` reads its best reverse
        ``"mean"`` mapping (the fit's ``"transported_mass"`` transposed: the plan mass from
        query cluster ``k`` to it over ``k``'s mass, the ``a``-weighted mean over ``k``'s
        cells of the share of their mass it receives; docs/method.md#many-studies-atlas),
        over the median best of the other reference clusters. This is how
        :class:`~pairot.tl.AtlasMap` flags both studies of a pair from one fit.

        Parameters
        ----------
        side
            ``"query"`` (default): flag the query clusters; ``"reference"``: the reference
            clusters, by the mirrored rule.
        tau_a
            Relaxation of the marginal of ``side`` in the extra solve, in (0, 1); 1 would
            enforce it and tell nothing (named after the query side; with
            ``side="reference"`` it is the extra solve's ``tau_b``). The thresholds are
            calibrated at 0.95 (on query clusters).
        min_retained
            Flag only clusters keeping less than this share (> 0) of their mass.
        max_mapping_ratio
            Flag only clusters whose best mapping is below this fraction (> 0) of the typical
            best mapping.

        Returns
        -------
        DataFrame indexed by query cluster (``query``), in the mapping's row order, with
        (for ``side="reference"``: indexed by reference cluster, ``reference``, in the
        mapping's column order, with ``best_query`` and ``closest_query`` in place of
        ``best_reference`` and ``closest_reference``, and every figure mirrored)

        - ``unmatched`` (bool): the flag;
        - ``score``: ``max(retained / min_retained, mapping_ratio / max_mapping_ratio)``, the
          number the rule thresholds: flagged exactly when ``score < 1``; lower = more novel;
        - ``reason``: a plain-language sentence with the figures and thresholds;
        - the components: ``retained``, ``mapping_ratio``, ``best_reference`` and
          ``best_mapping`` (highest mapping), ``closest_reference`` and ``best_distance``
          (lowest distance), ``distance_ratio`` (that distance over the median of the other
          query clusters' lowest distances), ``feature_ratio`` (the expression part of that
          distance over the mean expression cost between the cluster's own cells) and
          ``label_distance`` (lowest label distance). The last three are shown to explain a
          flag; the rule does not read them (they separated worse on the simulations).

        Notes
        -----
        Cost: one extra Sinkhorn solve with ``tau_a`` relaxed, plus one aggregation pass over
        its plan (the same work as :meth:`solve` and :meth:`compute_mapping`), and the
        mapping and distance of the fitted plan (cached if already computed). The object's
        own problem and solution are left as they are. Requires :meth:`solve`.

        A flag says: on these data, the cluster's cells have no counterpart worth their
        transport cost, and no reference cluster draws its mass mainly from it. It does not
        prove a new cell type (a cluster split differently, a state or a batch artefact can
        look the same), and an unflagged cluster may still be novel when it is very close to a
        reference type (see the calibration figures).
        """
        side = checks.check_side(side)
        for stage in ("geom", "problem", "solution"):
            self._require(stage)
        tau_a, min_retained, max_mapping_ratio = checks.check_unmatched(
            tau_a, min_retained, max_mapping_ratio
        )
        # the query side reads the "mean" mapping; the reference side the reverse "mean",
        # which is the fit's "transported_mass" (transposed in _novelty)
        method = "mean" if side == "query" else "transported_mass"
        return _novelty.unmatched_table(
            self,
            self.compute_mapping(method),
            self.compute_distance(),
            tau_a=tau_a,
            min_retained=min_retained,
            max_mapping_ratio=max_mapping_ratio,
            side=side,
        )
