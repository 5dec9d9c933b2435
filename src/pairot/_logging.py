"""The package logger; every module logs through ``logging.getLogger("pairot")``."""

from __future__ import annotations

import logging

logger = logging.getLogger("pairot")
