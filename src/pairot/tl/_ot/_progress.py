"""The progress bar of a Sinkhorn solve, which shows convergence rather than iterations."""

from __future__ import annotations

import math

from tqdm.auto import tqdm

from ..._logging import ProgressLines


class _ConvergenceBar:
    """Sinkhorn progress as convergence: the marginal error against the threshold.

    The bar fills with ``log(e0 / error) / log(e0 / threshold)`` (``e0`` the first error
    measured), so its estimate of the remaining time follows the convergence, not the
    iteration cap. Between checks of a long solve it shows the rows done of the current pass;
    at most every 30 s a line goes to the ``pairot.progress`` logger.
    """

    def __init__(self, threshold: float, enabled: bool, what: str):
        self.threshold = threshold
        self.first = None
        self.error = None
        self.iteration = 0
        self.what = what
        self.lines = ProgressLines()
        self.bar = tqdm(
            total=100,
            desc="Sinkhorn",
            disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]",
        )
        self._postfix(f"{what}, starting")
        self.lines(
            "Sinkhorn: %s; stops once the marginal error is below %.0e.",
            what,
            threshold,
            force=True,
        )

    def _postfix(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def _status(self) -> str:
        error = "not measured yet" if self.error is None else f"{self.error:.2e}"
        return f"iteration {self.iteration}, error {error} (target {self.threshold:.0e})"

    def update(self, iteration: int, error: float | None = None) -> None:
        self.iteration = iteration
        if error is not None and math.isfinite(error):
            self.error = error
            if self.first is None:
                self.first = max(error, self.threshold * 1.0001)
            span = math.log(self.first / self.threshold)
            done = math.log(self.first / max(error, 1e-300)) / span
            self.bar.n = round(100 * min(max(done, 0.0), 1.0), 1)
        self._postfix(self._status())
        self.lines("Sinkhorn: %s.", self._status())

    def rows(self, label: str, done: int, total: int, unit: str = "rows") -> None:
        self._postfix(f"{self._status()}; {label}: {done:,}/{total:,} {unit}")
        self.lines(
            "Sinkhorn: %s; %s: %s/%s %s.",
            self._status(),
            label,
            f"{done:,}",
            f"{total:,}",
            unit,
        )

    def close(self) -> None:
        self.bar.close()
