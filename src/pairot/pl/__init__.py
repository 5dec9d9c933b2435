"""Figures of a pairot result, each with an interactive (plotly) and a static (matplotlib) backend.

- :func:`mapping`: heatmap of mapping scores (query x reference clusters), green scale;
- :func:`distance`: heatmap of cluster distances, red-yellow-green reversed, 0 to 2;
- :func:`label_distance`: heatmap of the label distance, 0 to 1;
- :func:`sankey`: query clusters to reference clusters, links above a mapping threshold,
  coloured by distance.

``backend="plotly"`` (default) returns a ``plotly.graph_objects.Figure``;
``backend="matplotlib"`` returns the ``matplotlib.axes.Axes`` holding the plot; its figure is
made through ``matplotlib.pyplot`` (so ``plt.show()`` shows it): close it with
``plt.close(ax.figure)`` when making many. ``width`` / ``height`` are pixels for plotly and
inches for matplotlib; by default the figures grow with the number of clusters and reserve
room for long cluster names. Input DataFrames are never modified.
"""

from ._heatmap import distance, label_distance, mapping, order_by_score
from ._sankey import sankey

__all__ = ["distance", "label_distance", "mapping", "order_by_score", "sankey"]
