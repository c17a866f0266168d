"""Score quantiles as the stages record them (`q00, q10, q25, ..., q100`), in numeric order."""

from __future__ import annotations

import math


def ordered_quantiles(quantiles: dict | None) -> list[tuple[str, float]]:
    """CLAP score quantiles `q00, q10, q25, ..., q100` in numeric order (JSON files sort q100 before q25)."""

    def level(name: str) -> float:
        try:
            return float(name.lstrip("q"))
        except ValueError:
            return math.inf

    return sorted((quantiles or {}).items(), key=lambda kv: level(kv[0]))
