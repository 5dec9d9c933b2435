"""Figures of a pairot result, each with an interactive (plotly) and a static (matplotlib) backend.

- :func:`mapping`: heatmap of mapping scores (query x reference clusters), green scale;
- :func:`distance`: heatmap of cluster distances, red-yellow-green reversed, 0 to 2;
- :func:`label_distance`: heatmap of the label distance, 0 to 1;
- :func:`sankey`: query clusters to reference clusters, links above a mapping threshold,
  coloured by distance;
- :func:`atlas`: many studies' clusters as columns of boxes, the harmonized links between
  them, each harmonized group in one colour (the table of ``AtlasMap.harmonize``).

``backend="plotly"`` (default) returns a ``plotly.graph_objects.Figure``;
``backend="matplotlib"`` returns the ``matplotlib.axes.Axes`` holding the plot; its figure is
made through ``matplotlib.pyplot`` (so ``plt.show()`` shows it): close it with
``plt.close(ax.figure)`` when making many. Input DataFrames are never modified.

``width`` / ``height`` are pixels for both backends, as in upstream pairOT: matplotlib figures
are made at a fixed 100 dpi (not ``rcParams["figure.dpi"]``), so ``width=800, height=600``
gives an 8 x 6 inch figure of 800 x 600 pixels (``fig.get_size_inches() * fig.dpi``);
``savefig(dpi=...)`` can write it at another resolution. Sizes from 100 to 20,000 px are
accepted; a smaller one such as ``width=8`` raises ``ValueError`` (it is most likely meant in
inches). By default (``None``) the figures grow with the number of clusters and reserve room
for long cluster names.
"""

from ._atlas import atlas
from ._heatmap import distance, label_distance, mapping, order_by_score
from ._sankey import sankey

__all__ = ["atlas", "distance", "label_distance", "mapping", "order_by_score", "sankey"]
