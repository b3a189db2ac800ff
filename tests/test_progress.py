"""radiolib.progress: bars relayed to the study's terminal; off a terminal, one line per refresh."""

from __future__ import annotations

import io
import os

from radiolib.progress import PROGRESS_ENV, progress_bar, relayed_progress, shows_progress


def test_a_relayed_bar_prints_its_first_state_its_last_and_none_in_between():
    out = io.StringIO()
    assert PROGRESS_ENV not in os.environ and not shows_progress(None)
    with relayed_progress(out, every=3600):
        assert shows_progress(None) and not shows_progress(False)
        bar = progress_bar(50, "proposed seed 0", unit="step")
        for _ in range(50):
            bar.set_postfix({"d_total": "0.5", "g_total": "1.2"}, refresh=False)
            bar.update(1)
        bar.close()
        other = progress_bar(4, "baseline seed 1", initial=2, unit="step")
        other.update(1)
        other.refresh()  # as when a few seconds have passed; never closed: this newest state
        # is printed when the relay ends
    assert PROGRESS_ENV not in os.environ
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("proposed seed 0:   0%") and "0/50" in lines[0]
    assert lines[1].startswith("proposed seed 0: 100%") and "50/50" in lines[1]
    assert "d_total=0.5, g_total=1.2" in lines[1]
    assert "2/4" in lines[2] and "3/4" in lines[3] and lines[3].startswith("baseline seed 1")


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
