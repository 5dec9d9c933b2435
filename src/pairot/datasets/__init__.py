"""Demo data and the synthetic-study simulator.

- :func:`simulate_pair`: two simulated studies (raw UMI counts, cell types, donors) with a
  known cluster correspondence, from small test sizes to benchmark scale.
- :func:`simulate_atlas`: several simulated studies of one program of types, annotated at
  different granularities, each lacking some types, with the true harmonized groups.
- :func:`pbmc_demo`: a small real pair cut from scanpy's bundled ``pbmc68k_reduced``.
"""

from ._pbmc import pbmc_demo
from ._simulate import PROTOCOLS, SCENARIOS, UNINFORMATIVE_GENES, simulate_pair
from ._simulate_atlas import GRANULARITIES, simulate_atlas

__all__ = [
    "GRANULARITIES",
    "PROTOCOLS",
    "SCENARIOS",
    "UNINFORMATIVE_GENES",
    "pbmc_demo",
    "simulate_atlas",
    "simulate_pair",
]
