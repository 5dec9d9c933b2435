"""Flagging of uninformative genes (mitochondrial, ribosomal, lncRNA, receptor segments).

By the table :data:`pairot.pp.FILTERED_GENES` and by name rules (for names the table lacks:
clone names, other species' symbols).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ._gene_tables import _lookup

__all__ = ["UNINFORMATIVE_GENE_PATTERNS", "flag_uninformative_genes"]

#: The rules of :func:`flag_uninformative_genes`, one regular expression per category, matched
#: (with :func:`re.match`, i.e. anchored at the start) against the upper-cased gene symbol.
UNINFORMATIVE_GENE_PATTERNS: dict[str, str] = {
    # Mitochondrially encoded genes: MT-CO1, MT-ND4, MT-RNR2 (mouse mt-Co1).
    "mitochondrial": r"MT-",
    # Cytosolic and mitochondrial ribosomal proteins and their pseudogenes: RPL10, RPL10A,
    # RPL36AL, RPL7L1, RPLP0, RPS27A, RPS4X, RPS4Y1, RPSA, MRPL12, MRPS18B, RPL13AP5, RPSAP58.
    # The protein number may only be followed by A / AL / L / X / Y plus digits, so the kinases
    # RPS6KA1 / RPS6KB1 and RPS19BP1 (a binding protein) are NOT ribosomal proteins here.
    # Mitochondrial ribosomal proteins may end in A / B / C (MRPS18A, MRPS18B, MRPS18C).
    "ribosomal": r"RP[LS](?:\d+(?:AL|A|L|X|Y)?\d*|P\d+|A)(?:P\d+)?$"
    r"|MRP[LS]\d+[A-C]?(?:P\d+)?$",
    # lncRNA-like names: long intergenic non-coding RNAs (LINC00123, LINC-PINT) ...
    "lncRNA": r"LINC|.*-AS\d"
    # ... and clone-based names: GenBank accessions (AC012345.1, AL627309.1, AP000000.1,
    # BX284668.1, Z98884.1) and old Havana clone names (RP11-34P13.7, RP4-669L17.10,
    # CTD-2341M24.1, CTC-338M12.4, CTB-12O2.1, CTA-221G9.10, KB-1460A1.5, XXBAC-B461K10.4).
    r"|[A-Z]{1,2}\d{5,6}\.\d+$"
    r"|(?:RP\d+|CT[A-D]|KB|XX[A-Z]*)-[A-Z0-9-]+\.\d+$",
    # T-cell receptor segments: variable (TRAV1-2, TRBV20-1, TRGV9, TRDV2, TRGVA), joining
    # (TRAJ12, TRBJ2-7, TRGJP1, TRDJ1), diversity (TRBD1, TRDD1) and constant (TRAC, TRBC1,
    # TRGC2, TRDC) genes. The alpha locus has no D segment, so TRADD is not flagged.
    "TCR": r"TR(?:[ABGD][VJ]|[BD]D\d|AC$|BC\d|GC\d|DC$)",
    # B-cell receptor (immunoglobulin) segments: variable (IGHV1-2, IGKV1-5, IGLV3-21,
    # IGLVI-20), joining (IGHJ6, IGKJ1, IGLJ1), heavy diversity (IGHD1-26: a digit follows D)
    # and light constant (IGKC, IGLC2) genes. The heavy constant genes IGHM, IGHD (IgD), IGHG1-4,
    # IGHA1-2 and IGHE are B-cell / plasma-cell markers and are kept, as are IGLL1 / IGLL5.
    "BCR": r"IG(?:[HKL][VJ]|HD\d|KC$|LC\d)",
}

_RULE = re.compile("|".join(f"(?:{p})" for p in UNINFORMATIVE_GENE_PATTERNS.values()))


def _check_gene_names(values, argument: str) -> np.ndarray:
    """``values`` as a 1-D object array of ``str``; ``TypeError``/``ValueError`` otherwise."""
    if isinstance(values, str | bytes):
        msg = (
            f"{argument} must be a sequence of gene names, got the single string {values!r}; "
            f"wrap it in a list: {argument}=[{values!r}]."
        )
        raise TypeError(msg)
    if isinstance(values, pd.DataFrame) or not isinstance(values, Iterable):
        msg = (
            f"{argument} must be a 1-D sequence of gene names (list, numpy array, pandas "
            f"Index or Series), got {type(values).__name__}."
        )
        raise TypeError(msg)
    if isinstance(values, np.ndarray | pd.Index | pd.Series | pd.Categorical):
        array = np.asarray(values, dtype=object)
    else:
        items = list(values)
        array = np.empty(len(items), dtype=object)
        array[:] = items
    if array.ndim != 1:
        msg = (
            f"{argument} must be 1-D, got an array of shape {array.shape}; pass one gene "
            "name per element, e.g. adata.var_names."
        )
        raise ValueError(msg)
    is_str = np.fromiter((isinstance(v, str) for v in array), dtype=bool, count=array.size)
    if not is_str.all():
        position = int(np.flatnonzero(~is_str)[0])
        bad = array[position]
        msg = (
            f"{argument} must contain only strings (gene symbols), but element {position} is "
            f"{bad!r} ({type(bad).__name__}); drop missing names or convert them with str()."
        )
        raise TypeError(msg)
    return array


def _flag(symbols: pd.Series) -> np.ndarray:
    """Names (a Series of str) in ``FILTERED_GENES`` or matching a rule, both upper-cased."""
    upper = symbols.str.upper()
    flagged = upper.isin(_lookup().filtered_upper.keys()).to_numpy(dtype=bool)
    flagged |= upper.str.match(_RULE).to_numpy(dtype=bool)
    return flagged


def _check_lists(genes, keep, drop):
    """``genes``, ``keep`` and ``drop`` checked as gene-name arrays (``None`` stays ``None``);
    ``ValueError`` when a gene is in both ``keep`` and ``drop``."""
    names = _check_gene_names(genes, "genes")
    keep_names = None if keep is None else _check_gene_names(keep, "keep")
    drop_names = None if drop is None else _check_gene_names(drop, "drop")
    if keep_names is not None and drop_names is not None:
        both = sorted(set(keep_names) & set(drop_names))
        if both:
            msg = (
                f"{len(both)} gene(s) are in both keep and drop, e.g. {both[:5]}; a gene is "
                "either always kept or always dropped: remove it from one of the lists."
            )
            raise ValueError(msg)
    return names, keep_names, drop_names


def _with_lists(symbols: pd.Series, dropped: np.ndarray, keep_names, drop_names) -> np.ndarray:
    """``dropped`` with the ``keep`` genes rescued and the ``drop`` genes added (exact names)."""
    if keep_names is not None and keep_names.size:
        dropped &= ~symbols.isin(set(keep_names)).to_numpy()
    if drop_names is not None and drop_names.size:
        dropped |= symbols.isin(set(drop_names)).to_numpy()
    return dropped


def flag_uninformative_genes(
    genes,
    *,
    keep: Iterable[str] | None = None,
    drop: Iterable[str] | None = None,
) -> np.ndarray:
    """Flag the genes that carry little cell-type information, by their names.

    See docs/method.md#gene-filtering for where pairot applies them.

    A gene is flagged (``True``, to be dropped) when its upper-cased symbol is in the table
    :data:`pairot.pp.FILTERED_GENES` (upper-cased too; mitochondrial including nuclear-encoded
    mitochondrial ribosomal and import genes, ribosomal, lncRNA, T-cell and B-cell receptor
    segments; built from NCBI Gene, see ``pairot/pp/resources/README.md``) or when it matches
    one of the name rules of :data:`UNINFORMATIVE_GENE_PATTERNS`, which catch names the table
    does not list (clone names such as ``AC012345.1``, pseudogenes, other species):

    - mitochondrial: ``MT-*`` (``MT-CO1``, ``MT-ND4``);
    - ribosomal proteins: ``RPL*``, ``RPS*``, ``MRPL*``, ``MRPS*`` protein genes and their
      pseudogenes (``RPL10A``, ``RPLP0``, ``RPS27A``, ``RPSA``, ``MRPL12``, ``MRPS18B``,
      ``RPL13AP5``). Only ribosomal *protein* names are matched: the protein number may be
      followed by ``A``, ``AL``, ``L``, ``X`` or ``Y`` (and digits), so the kinases
      ``RPS6KA1``/``RPS6KB1`` and ``RPS19BP1`` are **not** flagged;
    - lncRNA-like names: ``LINC*``, names containing ``-AS`` followed by a digit
      (``FOXP1-AS1``), GenBank-accession clone names (``AC012345.1``, ``AL627309.1``,
      ``Z98884.1``) and Havana clone names (``RP11-34P13.7``, ``CTD-2341M24.1``,
      ``KB-1460A1.5``). Other lncRNA suffixes (``-DT``, ``-IT1``, ``-OT1``) are flagged only
      when the table lists them, and mouse ``Gm*`` genes are not flagged; pass them in
      ``drop`` if needed;
    - T-cell receptor segments: ``TRAV*``, ``TRBV*``, ``TRGV*``, ``TRDV*``, the joining
      segments ``TR[ABGD]J*``, the diversity segments ``TRBD<digit>``, ``TRDD<digit>`` and the
      constant genes ``TRAC``, ``TRBC<digit>``, ``TRGC<digit>``, ``TRDC`` (not ``TRADD``);
    - B-cell receptor segments: ``IGHV*``, ``IGKV*``, ``IGLV*``, ``IGHJ*``, ``IGKJ*``,
      ``IGLJ*``, the heavy diversity segments ``IGHD<digit>...`` (``IGHD1-26``) and the light
      constant genes ``IGKC``, ``IGLC<digit>``. The heavy constant genes (``IGHM``, ``IGHD``
      without a digit, ``IGHG1``, ``IGHA1``, ``IGHE``) are real B-cell and plasma-cell markers
      and are **not** flagged.

    Matching is done on the upper-cased symbol, so human symbols (``MT-CO1``, ``RPL10``) and
    mouse-style symbols (``mt-Co1``, ``Rpl10``, ``Rps27a``, ``Trbc1``, ``Igkc``) are flagged
    alike. ``keep`` and ``drop`` are matched exactly (case-sensitively) against ``genes``.
    Unlike :func:`~pairot.pp._gene_filter.gene_filter_mask` (what ``gene_filtering`` and
    ``filter_genes`` use), this does not restrict genes to official symbols.

    Parameters
    ----------
    genes
        Gene symbols, a 1-D sequence of strings (list, numpy array, ``pandas.Index``, e.g.
        ``adata.var_names``).
    keep
        Genes never flagged, whatever the rules say (rescued).
    drop
        Genes always flagged, whatever the rules say. A gene may not be in both ``keep`` and
        ``drop``.

    Returns
    -------
    Boolean array of ``len(genes)``: ``True`` where the gene is uninformative (to be dropped).

    Examples
    --------
    >>> flag_uninformative_genes(["CD3E", "MT-CO1", "RPL10A", "RPS6KA1", "IGHM", "IGKC"])
    array([False,  True,  True, False, False,  True])
    """
    names, keep_names, drop_names = _check_lists(genes, keep, drop)
    if names.size == 0:
        return np.zeros(0, dtype=bool)
    symbols = pd.Series(names, dtype=object)
    flagged = _with_lists(symbols, _flag(symbols), keep_names, drop_names)
    return flagged
