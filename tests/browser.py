"""Open built book pages in headless Chromium and report what a reader's browser would see."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).is_file()), None)


@dataclass
class PageReport:
    page: str
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors
    remote_requests: list[str] = field(default_factory=list)  # anything not from the book itself
    plotly_figures: int = 0
    plotly_drawn: int = 0  # figures whose .main-svg exists


def inspect_pages(html_root: Path, pages: list[Path], chromium: str) -> list[PageReport]:
    from playwright.sync_api import sync_playwright

    reports = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for page_path in pages:
            report = PageReport(page=str(page_path.relative_to(html_root)))
            page = browser.new_page()
            page.on("pageerror", lambda e, r=report: r.errors.append(f"exception: {e}"))
            page.on(
                "console",
                lambda m, r=report: (
                    r.errors.append(f"console: {m.text}") if m.type == "error" else None
                ),
            )
            page.on(
                "request",
                lambda q, r=report: (
                    r.remote_requests.append(q.url)
                    if not q.url.startswith(("file:", "data:", "blob:", "about:"))
                    else None
                ),
            )
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            figures = page.locator(".plotly-graph-div")
            report.plotly_figures = figures.count()
            if report.plotly_figures:
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.plotly-graph-div')]"
                    ".every(d => d.querySelector('.main-svg'))",
                    timeout=30_000,
                )
            report.plotly_drawn = page.locator(".plotly-graph-div:has(.main-svg)").count()
            page.close()
            reports.append(report)
        browser.close()
    return reports
