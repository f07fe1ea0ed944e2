"""How the reports write numbers: one place, so every report reads alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def percent(value: float) -> str:
    """A fraction as a percentage with one decimal: 0.905 -> "90.5%"."""
    return f"{100 * value:.1f}%"


def table_value(value: Any) -> str:
    """A setting or extra field in a Markdown table: floats to 4 significant digits, containers as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value)
    return str(value)
