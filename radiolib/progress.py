"""Progress bars that reach the terminal, also from a notebook that ``radiolib study`` runs.

papermill runs each notebook in a kernel whose output lands in the executed notebook, and from
there in the book: a bar written there would reach the terminal late, if at all, and fill the
book with its updates. So ``radiolib study`` names a file in :data:`PROGRESS_ENV` for the
kernels it starts and prints what they append to it as it comes (:func:`relayed_progress`);
:func:`progress_bar` appends its state there as one line every few seconds, and nothing goes
into the notebook. Outside a study :func:`progress_bar` is tqdm's bar redrawn in place on a
terminal; elsewhere (a log file, CI, a notebook's output) a bar redrawn with carriage returns
would turn into one long unreadable line, so there each refresh is a line of its own, at most
every ``log_every`` seconds, and the last line says how it ended.

A relayed state is one JSON line ``{"bar": id, "text": tqdm's line, "closed": bool, "last": bool}``
(``last``: the bar is full or closed).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

PROGRESS_ENV = "RADIOLIB_PROGRESS"  # the file that bars append their state to, when set
RELAYED_EVERY_S = 2.0  # how often a relayed bar appends its state
SHOWN_EVERY_S = 10.0  # how often the terminal shows a line of the same bar (and its last one)

_bar_ids = itertools.count()


def relaying() -> bool:
    """Whether bars are relayed to a ``radiolib study`` terminal (:data:`PROGRESS_ENV` set)."""
    return bool(os.environ.get(PROGRESS_ENV))


class _RelayedBar(tqdm):
    """A text tqdm bar that appends its state to the relay file instead of drawing itself."""

    def __init__(self, path: str, **kwargs: object) -> None:
        self._sink = open(path, "a", buffering=1)  # one state per line; closed with the bar
        self._id = f"{os.getpid()}-{next(_bar_ids)}"
        self._closing = False
        super().__init__(file=io.StringIO(), mininterval=RELAYED_EVERY_S, leave=True, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or self._sink.closed:
            return True
        record = {"bar": self._id, "text": msg or str(self), "closed": self._closing}
        record["last"] = self._closing or (self.total is not None and self.n >= self.total)
        self._sink.write(json.dumps(record) + "\n")
        return True

    def close(self) -> None:
        self._closing = True
        try:
            super().close()  # shows the final state once more
        finally:
            self._sink.close()


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
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    log_every: float = 15.0,
    stream: TextIO | None = None,
) -> tqdm:
    """A bar of ``total`` ``unit`` s from ``initial``, disabled unless ``enabled``: relayed to
    the ``radiolib study`` terminal when a study runs this (:func:`relaying`) and no ``stream``
    is given; else on ``stream`` (default stderr), redrawn in place on a terminal and one line
    per refresh (at most every ``log_every`` seconds) elsewhere."""
    path = os.environ.get(PROGRESS_ENV)
    if enabled and path and stream is None:
        return _RelayedBar(path, total=total, initial=initial, desc=desc, unit=unit)
    stream = stream if stream is not None else sys.stderr
    if not enabled or getattr(stream, "isatty", lambda: False)():
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


def shows_progress(progress: bool | None) -> bool:
    """``progress``, where None means: only when a ``radiolib study`` relays the bars."""
    return relaying() if progress is None else bool(progress)


class _Relay(threading.Thread):
    """Prints the states appended to ``path`` to ``out``: a bar's first state, then one every
    ``every`` seconds, and always its last one."""

    def __init__(self, path: Path, out: TextIO, every: float) -> None:
        super().__init__(name="radiolib-progress", daemon=True)
        self.path, self.out, self.every = path, out, every
        self.done = threading.Event()
        self.partial = ""
        self.pending: dict | None = None  # the newest state not yet printed
        self.shown: dict[str, float] = {}  # when each bar was last printed

    def run(self) -> None:
        with open(self.path) as fh:
            while not self.done.wait(0.2):
                self.pump(fh)
            self.pump(fh)
        if self.pending is not None:
            self.print(self.pending)

    def pump(self, fh: TextIO) -> None:
        for line in iter(fh.readline, ""):
            self.partial += line
            if not self.partial.endswith("\n"):  # a line still being written
                return
            text, self.partial = self.partial, ""
            try:
                state = json.loads(text)
            except json.JSONDecodeError:
                continue
            self.receive(state)

    def receive(self, state: dict) -> None:
        if self.pending is not None and self.pending["bar"] != state["bar"]:
            self.print(self.pending)  # the last state of a bar that stopped updating
        last = self.shown.get(state["bar"])
        if state["closed"]:
            self.print(state)
        elif state["last"] or (last is not None and time.monotonic() - last < self.every):
            self.pending = state  # a full bar is shown once, when it closes
        else:
            self.print(state)

    def print(self, state: dict) -> None:
        tqdm.write(state["text"], file=self.out)  # above any bar drawn on the same stream
        self.out.flush()
        self.shown[state["bar"]] = time.monotonic()
        self.pending = None


@contextmanager
def relayed_progress(out: TextIO, every: float = SHOWN_EVERY_S) -> Iterator[None]:
    """Inside the block, :func:`progress_bar` bars of this process and of the processes it
    starts (a notebook's kernel) are printed to ``out`` as lines: each bar's first state, one
    every ``every`` seconds and its last one."""
    fd, name = tempfile.mkstemp(prefix="radiolib-progress-", suffix=".jsonl")
    os.close(fd)
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = name
    relay = _Relay(Path(name), out, every)
    relay.start()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before
        relay.done.set()
        relay.join()
        Path(name).unlink(missing_ok=True)
