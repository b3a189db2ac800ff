"""Run the study: execute the ordered notebooks headless with papermill, then build the book.

The book's table of contents (``_toc.yml``) is the single statement of order: every entry
``book/_executed/NAME`` is the executed copy of ``notebooks/NAME.ipynb``. Notebooks execute into a
staging folder; only when all of them succeed does the staging folder replace
``book/_executed``, and the HTML is built into a staging folder that replaces ``book/_build``
only when the build succeeds. A failing run therefore never damages the last good book.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from radiolib.bench import matmul_gflops
from radiolib.config import Profile, get_profile, resolve_device
from radiolib.errors import RadiolibError
from radiolib.io import (
    atomic_write,
    fsync_dir,
    fsync_tree,
    read_json,
    remove_leftovers,
    write_json,
)
from radiolib.progress import relayed_progress
from radiolib.run_record import (
    RunRecord,
    environment_info,
    git_commit,
    package_versions,
    reproducing_page,
)

EXECUTED = Path("book") / "_executed"
RUNS = "runs"
RUN_IDENTITY = "run.json"
# Parameters that change neither data, weights nor results: runs differing only here share a folder
NOT_IN_RUN_KEY = ("train.num_workers", "train.parallel_runs", "curation.workers")
BUILD = Path("book") / "_build"
RUN_RECORD = "run_record.json"
REPRODUCING_PAGE = "reproducing.md"


class StudyError(RadiolibError):
    """A notebook or the book build failed; the message says which and where."""


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) with ``_toc.yml`` and notebooks/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    raise StudyError(f"no study found at or above {here} (expected _toc.yml and notebooks/)")


# --------------------------------------------------------------------------- workspace


@dataclass
class Workspace:
    """Where one study run keeps its data, models and results (an ignored ``runs/`` folder)."""

    profile: Profile
    data: str  # "phantom" or the path of a real cohort download
    device: str
    run_dir: Path

    @property
    def uses_phantom(self) -> bool:
        return self.data == "phantom"

    @property
    def raw(self) -> Path:
        """The raw cohort: the phantom written for this run, or the real download."""
        return self.run_dir / "phantom" if self.uses_phantom else Path(self.data).expanduser()

    @property
    def curated(self) -> Path:
        return self.run_dir / "curated"

    @property
    def results(self) -> Path:
        path = self.run_dir / "results"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def phantom(
        self,
        signal: float | None = None,
        progress: bool = True,
        seed: int | None = None,
        subtypes: int | None = None,
    ) -> Path:
        """The phantom cohort of this profile, written on first use and reused while its
        parameters stay the same. ``signal``, ``seed`` and ``subtypes`` (default: the
        profile's) name a variant, kept in ``phantom-signal<s>-seed<n>-subtypes<k>`` with only
        the given parameters in the name; with none given it is the study's own :attr:`raw`."""
        from radiolib.data.phantom import write_phantom

        p = self.profile.phantom
        params = {
            "patients": p.patients,
            "seed": p.seed if seed is None else int(seed),
            "subtypes": p.subtypes if subtypes is None else int(subtypes),
            "signal": p.signal if signal is None else float(signal),
            "matrix": p.matrix,
        }
        out = self.phantom_dir(signal, seed, subtypes)
        stamp = out.with_name(out.name + ".json")
        if stamp.is_file() and read_json(stamp) == params and out.is_dir():
            return out
        stamp.unlink(missing_ok=True)
        write_phantom(out, progress=progress, **params)
        write_json(stamp, params)
        return out

    def phantom_dir(
        self, signal: float | None = None, seed: int | None = None, subtypes: int | None = None
    ) -> Path:
        """Where :meth:`phantom` keeps the phantom with these parameters (written or not):
        ``phantom-signal<s>-seed<n>-subtypes<k>`` with only the given parameters in the name,
        the study's own :attr:`raw` with none given."""
        given = (("signal", signal), ("seed", seed), ("subtypes", subtypes))
        variant = [f"{name}{float(value):g}" for name, value in given if value is not None]
        return self.run_dir / "-".join(["phantom", *variant]) if variant else self.raw

    def model_dir(self, model: str, seed: int, tag: str = "") -> Path:
        """``<run_dir>/models/<tag>/<model>-seed<seed>``; ``tag`` names a cohort variant."""
        return self.run_dir / "models" / (tag or "main") / f"{model}-seed{seed}"


def run_identity(cfg: Profile, data: str) -> dict[str, Any]:
    """What decides a run folder's content: the data source and every parameter that changes
    results (the phantom's parameters only when the data is the phantom)."""
    source = data if data == "phantom" else str(Path(data).expanduser().resolve())
    parameters = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in cfg.flat().items()
        if k not in NOT_IN_RUN_KEY and (source == "phantom" or not k.startswith("phantom."))
    }
    return {"data": source, "parameters": parameters}


def run_name(cfg: Profile, data: str) -> str:
    """``<profile>-<data>-<hash>``, e.g. ``quick-phantom-1a2b3c4d``: a readable prefix and the
    first 8 hex digits of the SHA-256 of :func:`run_identity`, so that a real-data run, a
    phantom run and any override that changes results each get their own folder."""
    identity = run_identity(cfg, data)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    label = "phantom" if data == "phantom" else Path(identity["data"]).name
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_.") or "data"
    return f"{cfg.name}-{label}-{digest}"


def open_workspace(
    profile: str | None = None,
    data: str = "phantom",
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Workspace:
    """The workspace a notebook works in; its arguments are the notebook's parameters.

    The run folder (default ``runs/<run_name>``) records what it holds in ``run.json``."""
    cfg = get_profile(profile, overrides)
    if data != "phantom" and not Path(data).expanduser().is_dir():
        raise StudyError(
            f"data must be 'phantom' or a folder holding the cohort; {data!r} is neither"
        )
    if run_dir is None:
        run_dir = find_project_root() / RUNS / run_name(cfg, data)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {"profile": cfg.name, **run_identity(cfg, data)}
    stamp = run_dir / RUN_IDENTITY
    if not stamp.is_file() or read_json(stamp) != identity:
        write_json(stamp, identity)
    return Workspace(profile=cfg, data=data, device=resolve_device(device), run_dir=run_dir)


# --------------------------------------------------------------------------- notebooks


def notebook_order(root: Path) -> list[str]:
    """Names of the notebooks the book executes, in the table of contents' order."""
    toc_path = root / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    prefix = EXECUTED.as_posix() + "/"
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            entry = node.get("file")
            if isinstance(entry, str) and entry.startswith(prefix):
                name = entry[len(prefix) :].removesuffix(".ipynb")
                if (root / "notebooks" / f"{name}.ipynb").is_file():
                    names.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    missing = [
        e
        for e in _toc_files(toc)
        if e.startswith(prefix)
        and e[len(prefix) :] not in names
        and e[len(prefix) :] != Path(REPRODUCING_PAGE).stem
    ]
    if missing:
        raise StudyError(f"{toc_path} lists {missing} but notebooks/ has no such notebook")
    return names


def _toc_files(node: Any) -> list[str]:
    if isinstance(node, dict):
        files = [node["file"]] if isinstance(node.get("file"), str) else []
        return files + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


def _failure_message(name: str, error: Exception, output: Path) -> str:
    """Name the failing cell as a person counts it in the committed notebook (1-based, not
    counting the cell papermill injects), with its first line."""
    import nbformat

    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    where = "an unknown cell"
    if output.is_file():
        added = ("injected-parameters", "papermill-error-cell-tag")
        cells = [
            c
            for c in nbformat.read(output, as_version=4).cells
            if not set(added) & set(c.metadata.get("tags", []))
        ]
        failed = [
            i
            for i, c in enumerate(cells)
            if c.cell_type == "code"
            and any(o.get("output_type") == "error" for o in c.get("outputs", []))
        ]
        if failed:
            first_line = (cells[failed[0]].source.strip().splitlines() or [""])[0]
            where = f"cell {failed[0] + 1} of {len(cells)} (`{first_line[:80]}`)"
    return (
        f"notebook {name}.ipynb failed in {where}: {ename}: {evalue}\n"
        f"the executed copy with the traceback is at {output}"
    )


def execute_notebook(
    name: str,
    root: Path,
    staging: Path,
    parameters: dict[str, Any],
    progress: bool,
    label: str | None = None,
) -> float:
    """Execute ``notebooks/NAME.ipynb`` into ``staging``; return its wall time in seconds.

    With ``progress`` papermill's bar of executed cells is shown, named ``label`` (default: the
    notebook's file name), and the bars the notebook's code draws with
    :func:`radiolib.progress.progress_bar` (training) are printed above it, as lines on stderr,
    never into the executed notebook."""
    import papermill as pm

    source = root / "notebooks" / f"{name}.ipynb"
    output = staging / f"{name}.ipynb"
    start = time.perf_counter()
    relay = relayed_progress(sys.stderr) if progress else contextlib.nullcontext()
    try:
        with relay:
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(root / "notebooks"),
                progress_bar={"desc": label or f"{name}.ipynb"} if progress else False,
                log_output=False,
            )
    except Exception as error:  # papermill wraps the cell's exception
        raise StudyError(_failure_message(name, error, output)) from None
    _hide_injected_parameters(output)
    return time.perf_counter() - start


def _hide_injected_parameters(path: Path) -> None:
    """Collapse in the book the cell papermill injects: plumbing, like the parameters cell."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    nbformat.write(nb, path)


# --------------------------------------------------------------------------- book


def build_book(root: Path, staging: Path) -> None:
    """``jupyter-book build`` of ``root`` into ``staging``; raises StudyError with its log."""
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(root),
        "--path-output",
        str(staging),
    ]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StudyError(f"jupyter-book build failed (exit {result.returncode}):\n{tail}")


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target`` with two renames (old copy removed last)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def run_study(
    profile: str | None = None,
    data: str = "phantom",
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    build: bool = True,
    progress: bool = True,
) -> RunRecord:
    """Execute every notebook of the book in order, write the run record, build the book.

    The terminal shows each notebook as it starts (``[3/6] 02_training.ipynb``) and its wall
    time when it ends; with ``progress`` also the cells executed and the training bars (model,
    seed, step, time left, losses: :func:`execute_notebook`)."""
    root = Path(root).resolve() if root else find_project_root()
    cfg = get_profile(profile, overrides)  # fail early on a bad profile or parameter
    device = resolve_device(device)
    if data != "phantom":
        data = str(Path(data).expanduser().resolve())
        if not Path(data).is_dir():
            raise StudyError(f"--data {data}: no such folder (expected a cohort download)")
    names = notebook_order(root)
    if not names:
        raise StudyError(f"{root / '_toc.yml'} lists no notebook under {EXECUTED}/")

    t0 = time.perf_counter()
    record = RunRecord(
        profile=cfg.name,
        data=data,
        device=device,
        parameters=cfg.flat(),
        overrides=dict(overrides or {}),
        packages=package_versions(),
        git_commit=git_commit(root),
        environment=environment_info(),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        run_dir=f"{RUNS}/{run_name(cfg, data)}",
    )
    parameters = {
        "profile": cfg.name,
        "data": data,
        "device": device,
        "overrides": {k: str(v) for k, v in (overrides or {}).items()},
    }
    print(f"[radiolib study] run folder: {root / record.run_dir}", flush=True)
    gemm_start = matmul_gflops(device)
    _execute_all(root, names, parameters, record, progress, t0, gemm_start)
    executed = root / EXECUTED
    if build:
        t1 = time.perf_counter()
        build_staging = root / "book" / f"_build.staging-{os.getpid()}"
        if build_staging.exists():
            shutil.rmtree(build_staging)
        try:
            build_book(root, build_staging)
            _replace_dir(build_staging / "_build", root / BUILD)
        finally:
            shutil.rmtree(build_staging, ignore_errors=True)
        record.book_seconds = round(time.perf_counter() - t1, 1)
        record.total_seconds = round(time.perf_counter() - t0, 1)
        write_json(executed / RUN_RECORD, dataclasses.asdict(record))
        print(f"[radiolib study] book built: {root / BUILD / 'html' / 'index.html'}", flush=True)
    return record


def _execute_all(
    root: Path,
    names: list[str],
    parameters: dict[str, Any],
    record: RunRecord,
    progress: bool,
    t0: float,
    gemm_start: float,
) -> None:
    """Execute ``names`` in order into a staging folder that replaces ``book/_executed``, with
    the "Reproducing this study" page and the run record (its total time counted from ``t0``,
    the device's GEMM rate the best of ``gemm_start`` and one measured at the end), only when
    all of them succeed."""
    executed = root / EXECUTED
    for target in (executed, root / BUILD):  # what runs that were killed left behind
        remove_leftovers(target.parent, f"{target.name}.staging-")
        old = target.with_name(target.name + ".old")
        if old.is_dir() and not target.exists():  # killed between _replace_dir's renames
            old.rename(target)
    staging = executed.with_name(executed.name + f".staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for k, name in enumerate(names, 1):
            label = f"[{k}/{len(names)}] {name}.ipynb"
            print(f"[radiolib study] {label} ({record.profile} profile) ...", flush=True)
            seconds = execute_notebook(name, root, staging, parameters, progress, label)
            record.notebook_seconds[name] = round(seconds, 1)
            print(f"[radiolib study] {label} done in {_duration(seconds)}", flush=True)

        record.gemm_gflops = round(max(gemm_start, matmul_gflops(record.device)), 1)
        record.total_seconds = round(time.perf_counter() - t0, 1)
        with atomic_write(staging / REPRODUCING_PAGE, "w") as fh:
            fh.write(reproducing_page(record))
        write_json(staging / RUN_RECORD, dataclasses.asdict(record))
        fsync_tree(staging)
        _replace_dir(staging, executed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed run leaves no staging folder


def _duration(seconds: float) -> str:
    """``42 s`` or ``12 min 34 s``."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
