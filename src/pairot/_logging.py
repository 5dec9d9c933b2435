"""The package loggers; every module logs through ``logging.getLogger("pairot")``.

``pairot.progress`` carries the short lines that say which step is running and, for long
computations, how far it has got (at most one line every :data:`PROGRESS_INTERVAL` seconds
from a loop). The command line prints them by default; in Python they are INFO records of a
child of the ``pairot`` logger, shown once logging is configured for it.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("pairot")
progress_logger = logging.getLogger("pairot.progress")

#: Seconds between two progress lines of one long loop.
PROGRESS_INTERVAL = 30.0


class ProgressLines:
    """Rate-limited progress lines of one long loop on the ``pairot.progress`` logger."""

    def __init__(self, interval: float = PROGRESS_INTERVAL):
        self.interval = interval
        self._last = time.monotonic()

    def __call__(self, message: str, *args, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            progress_logger.info(message, *args)
