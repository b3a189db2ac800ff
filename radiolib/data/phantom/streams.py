"""The phantom's version and its seeded random streams.

Every draw of the phantom comes from its own stream ``(seed, stream, ...)``: 1 the patients,
2 the gene layout, 3 the expression values, ``(4, i)`` patient i's images, ``(5, i)`` patient i's
clinical row, 7 the archetypes beyond the third, 8 the patients without SEG or expression. Each
part is thus reproducible on its own, whatever is drawn before it. The version enters the marker,
the ground truth and every DICOM UID.
"""

from __future__ import annotations

import numpy as np

VERSION = "radiolib-phantom-1"


def stream(seed: int, *ids: int) -> np.random.Generator:
    """The random generator of one part of the phantom (numbers in the module docstring)."""
    return np.random.default_rng([int(seed), *ids])
