"""What a study run records about itself: the machine and its packages, the wall time of each
notebook beside the device's matrix-product rate, and the book's "Reproducing this study" page.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radiolib.config import resolve_device

KEY_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "scikit-image",
    "SimpleITK",
    "pydicom",
    "highdicom",
    "pyradiomics-bhklab",
    "plotly",
    "ipywidgets",
    "papermill",
    "jupyter-book",
    "sphinx",
)


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_info() -> dict[str, Any]:
    """Python, packages, CPU and GPU of this machine: what the environment page shows."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "device": resolve_device("auto"),
        "packages": package_versions(),
    }


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


@dataclass
class RunRecord:
    profile: str
    data: str
    device: str
    parameters: dict[str, Any]
    overrides: dict[str, Any]
    packages: dict[str, str]
    git_commit: str
    environment: dict[str, Any]
    started: str
    run_dir: str = ""  # the run folder the notebooks worked in, relative to the project
    notebook_seconds: dict[str, float] = field(default_factory=dict)
    book_seconds: float | None = None
    total_seconds: float | None = None
    # the device's fp32 2048^3 matrix-product rate, best of the start and the end of the run:
    # times from machines of different speed compare as GEMM-time, seconds x this rate
    gemm_gflops: float | None = None


# the budget of the quick profile's `make book`: 10 minutes on a 2-core machine whose GEMM runs
# at 230 GFLOP/s, i.e. about 140 TFLOP of GEMM-time
REFERENCE_GEMM_GFLOPS = 230.0


def gemm_tflop(seconds: float, gemm_gflops: float | None) -> float:
    """GEMM-time of ``seconds`` on a device whose matrix products run at ``gemm_gflops``: the
    TFLOP its GEMM would have done meanwhile (NaN when the rate was not measured)."""
    return seconds * gemm_gflops / 1e3 if gemm_gflops else float("nan")


def reproducing_page(record: RunRecord) -> str:
    """The book's "Reproducing this study" page (MyST markdown) from a run record."""
    env = record.environment
    gpu = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    total, rate = record.total_seconds or 0.0, record.gemm_gflops
    lines = [
        "# Reproducing this study",
        "",
        "This book was produced by one command. To produce it again from a fresh clone:",
        "",
        "```bash",
        "make book                                     # the quick profile, on the CPU or a GPU",
        f"radiolib study --profile {record.profile} --data {record.data}"
        + "".join(f" -p {k}={v}" for k, v in record.overrides.items()),
        "```",
        "",
        "## This run",
        "",
        "| | |",
        "| --- | --- |",
        f"| profile | `{record.profile}` |",
        f"| data | `{record.data}` |",
        f"| run folder | `{record.run_dir}` |",
        f"| device | `{record.device}` (GPU: {gpu}) |",
        f"| started | {record.started} |",
        f"| git commit | `{record.git_commit}` |",
        f"| machine | {env.get('platform', '?')}, {env.get('cpu_count', '?')} CPU cores |",
        f"| fp32 matrix product (2048³) | {record.gemm_gflops or float('nan'):.0f} GFLOP/s |",
        f"| total wall time | {total:.0f} s = {gemm_tflop(total, rate):.0f} TFLOP of GEMM-time |",
        "",
        "## Wall time per notebook",
        "",
        "Machines differ: GEMM-time (seconds x the fp32 matrix-product rate above) compares runs",
        f"on different machines. At {REFERENCE_GEMM_GFLOPS:.0f} GFLOP/s, 10 minutes are "
        f"{gemm_tflop(600, REFERENCE_GEMM_GFLOPS):.0f} TFLOP.",
        "",
        "| notebook | seconds | GEMM-time (TFLOP) |",
        "| --- | ---: | ---: |",
        *[
            f"| {n} | {s:.1f} | {gemm_tflop(s, rate):.1f} |"
            for n, s in record.notebook_seconds.items()
        ],
        "",
        "## Parameters",
        "",
        "Every parameter of the profile, after overrides "
        "(change any with `-p section.name=value`).",
        "",
        "| parameter | value |",
        "| --- | --- |",
        *[f"| `{k}` | `{v}` |" for k, v in record.parameters.items()],
        "",
        "## Package versions",
        "",
        "| package | version |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in record.packages.items()],
        "",
        "The full record is `book/_executed/run_record.json`.",
        "",
    ]
    return "\n".join(lines)
