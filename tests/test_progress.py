"""Progress bars: redrawn in place on a terminal, one plain line per refresh elsewhere."""

from __future__ import annotations

import io

from radiolib.progress import progress_bar


def test_off_a_terminal_each_refresh_is_a_line_of_its_own():
    stream = io.StringIO()
    with progress_bar(4, "curating", "patient", initial=1, log_every=0, stream=stream) as bar:
        for _ in range(3):
            bar.update()
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("curating: 1/4 patients") and lines[-1].startswith(
        "curating: 4/4 patients"
    )
    assert all(line.strip() for line in lines)


def test_a_disabled_bar_writes_nothing():
    stream = io.StringIO()
    with progress_bar(3, "curating", "patient", enabled=False, stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
