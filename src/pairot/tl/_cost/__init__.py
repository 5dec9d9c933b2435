"""Builds the cost (features, label distances, problem): imports pp and numpy, not _ot, _answers."""
