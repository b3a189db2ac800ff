"""Progress bars that stay readable off a terminal.

On a terminal :func:`progress_bar` is an ordinary tqdm bar redrawn in place. Elsewhere (a log
file, CI, a notebook's output, papermill) a bar redrawn with carriage returns turns into one
long unreadable line, so there each refresh is written as a line of its own, at most every
``log_every`` seconds, and the last line says how it ended.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class _Lines:
    """A stream for tqdm that writes each refresh of the bar as a line of its own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.strip("\r\n").rstrip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(
    total: int,
    desc: str,
    unit: str,
    enabled: bool = True,
    initial: int = 0,
    log_every: float = 15.0,
    stream: TextIO | None = None,
) -> tqdm:
    """A tqdm bar of ``total`` ``unit`` s on ``stream`` (default stderr), ``initial`` of them
    done already; disabled unless ``enabled``."""
    stream = stream if stream is not None else sys.stderr
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    if terminal or not enabled:
        return tqdm(
            total=total, initial=initial, desc=desc, unit=unit, file=stream, disable=not enabled
        )
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=_Lines(stream),
        mininterval=log_every,
        bar_format="{desc}: {n_fmt}/{total_fmt} " + unit + "s, {elapsed} elapsed, {remaining} left",
    )
