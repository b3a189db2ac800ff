"""What a training run leaves in its folder, and how the rest of radiolib reads it.

A run folder holds ``checkpoint.pt`` (and ``checkpoint.prev.pt``, the one before it), ``log.jsonl``,
``samples/step_XXXXXX.npz``, TensorBoard event files in ``tensorboard/`` and, once finished,
``done.json``. :mod:`radiolib.train` writes them, checkpoints through :func:`save_checkpoint`;
evaluation, synthesis and the notebooks read them through this module and never train:
:func:`finished_runs` names the run that is missing instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from radiolib.config import ModelConfig, Profile, model_options, resolve_device
from radiolib.errors import MissingRunError, StaleRunError, TrainingError
from radiolib.io import atomic_write, read_json

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.models import GAN

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the checkpoint before the newest, kept to fall back
CHECKPOINT_FORMAT = 1
DONE = "done.json"  # written when a run has trained all its steps
LOG = "log.jsonl"
TENSORBOARD = "tensorboard"  # event files for `tensorboard --logdir`, beside log.jsonl

# Train settings that change neither the weights nor the data order: a run may resume with
# different values of these (more steps, other logging), but not of anything else.
RESUMABLE_FIELDS = (
    "steps",
    "checkpoint_every",
    "log_every",
    "sample_every",
    "seeds",
    "num_workers",
    "parallel_runs",  # thread counts: the last bits only
)


def cohort_identity(cohort: CuratedCohort) -> dict[str, Any]:
    """What a checkpoint records of the cohort it was trained on: a digest of its content
    (:func:`_cohort_data`), its folder and sizes, so a run can tell its cohort from another."""
    data = cohort_data(cohort)
    return {
        "sha256": hashlib.sha256(
            json.dumps(data, sort_keys=True, default=str).encode()
        ).hexdigest(),
        "path": str(getattr(cohort, "path", "")),
        "patients": len(cohort.patients),
        "n_genes": int(np.shape(cohort.genes)[1]),
        "image_size": int(np.shape(cohort.tumour_images)[-1]),
    }


def cohort_data(cohort: CuratedCohort) -> dict[str, Any]:
    manifest = getattr(cohort, "manifest", None) or {}
    data = {
        "patients": list(cohort.patients),
        "split": [str(s) for s in np.asarray(cohort.split)],
        "manifest": manifest,
        "shapes": [
            list(np.shape(cohort.genes)),
            list(np.shape(cohort.tumour_images)),
            list(np.shape(cohort.background_images)),
        ],
    }
    if not manifest:  # an in-memory cohort: hash its arrays instead
        h = hashlib.sha256()
        for a in (
            cohort.genes,
            cohort.tumour_images,
            cohort.tumour_masks,
            cohort.background_images,
        ):
            h.update(np.ascontiguousarray(a).tobytes())
        data["arrays"] = h.hexdigest()
    return data


def fingerprint(
    gan_name: str, n_genes: int, image_size: int, cohort: CuratedCohort, cfg: Profile, seed: int
) -> str:
    """Hash of everything that decides the weights (not the step count or logging); for a
    variant, the model options it trains with (the profile's, with the variant's changes)."""
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in RESUMABLE_FIELDS}
    data = cohort_data(cohort)
    blob = {
        "gan": gan_name,
        "n_genes": n_genes,
        "image_size": image_size,
        "seed": seed,
        "model": dataclasses.asdict(model_options(gan_name, cfg.model)),
        "train": train,
        "data": data,
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_checkpoint(out: Path | str, device: str = "cpu", name: str = CHECKPOINT) -> dict[str, Any]:
    """The checkpoint ``name`` of a run folder (``weights_only``: no pickled objects)."""
    path = Path(out) / name
    if not path.is_file():
        raise TrainingError(f"no checkpoint in {Path(out)} (expected {path.name})")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        text = str(exc).strip()
        why = (
            "it holds more than tensors and plain values, which are never unpickled"
            if text.startswith("Weights only load failed")
            else (text.splitlines() or [type(exc).__name__])[0]
        )
        raise TrainingError(f"{path}: unreadable checkpoint ({why})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a radiolib checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as ``checkpoint.pt`` of format :data:`CHECKPOINT_FORMAT`, atomically; the
    checkpoint it replaces becomes ``checkpoint.prev.pt``."""
    with atomic_write(out / CHECKPOINT, "wb", previous=out / PREVIOUS_CHECKPOINT) as fh:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, fh)


def resume_checkpoint(out: Path, announce: bool) -> tuple[dict[str, Any] | None, bool]:
    """The newest readable checkpoint of ``out`` and whether it is the previous one.

    ``checkpoint.pt``, else (missing or unreadable) ``checkpoint.prev.pt``, said on stderr when
    ``announce``; ``(None, False)`` when there is neither. Raises :class:`TrainingError` when
    both exist but neither can be read.
    """
    newest, previous = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    if not newest.is_file() and not previous.is_file():
        return None, False
    problem = f"{newest} is missing"
    if newest.is_file():
        try:
            return load_checkpoint(out), False
        except TrainingError as exc:
            problem = str(exc)
    try:
        ckpt = load_checkpoint(out, name=PREVIOUS_CHECKPOINT)
    except TrainingError as exc:
        raise TrainingError(
            f"cannot resume the run in {out}: {problem}; the previous checkpoint too: {exc}. "
            "Start it over with --no-resume (resume=False)"
        ) from None
    if announce:
        print(
            f"{problem}: resuming from the previous checkpoint {previous.name} (step "
            f"{ckpt.get('step')}); pass --no-resume (resume=False) to start over instead",
            file=sys.stderr,
            flush=True,
        )
    return ckpt, True


def trim_log(out: Path, step: int) -> None:
    """Drop the lines of ``log.jsonl`` past ``step`` (written after the checkpoint a run
    resumes from)."""
    path = out / LOG
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    with atomic_write(path, "w") as fh:
        fh.write("".join(line + "\n" for line in keep))


def last_logged(out: Path) -> dict[str, float]:
    path = out / LOG
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return {}
    last = json.loads(lines[-1])
    return {k: v for k, v in last.items() if k.startswith(("d_", "g_"))}


def load_generator(out: Path | str, device: str = "cpu") -> GAN:
    """The trained GAN of a run folder, in eval mode, carrying the EMA generator if kept.

    Rebuilt with ``radiolib.models.build_gan`` from the name, gene count, image size and model
    configuration stored in the checkpoint.
    """
    from radiolib.models import build_gan

    device = resolve_device(device)
    ckpt = load_checkpoint(out, device)
    info = ckpt["gan"]
    model_cfg = ModelConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in info["model"].items()}
    )
    gan = build_gan(info["name"], int(info["n_genes"]), int(info["image_size"]), model_cfg)
    generator = (
        ckpt["generator_ema"] if ckpt.get("generator_ema") is not None else (ckpt["generator"])
    )
    gan.generator.load_state_dict(generator)
    gan.discriminator.load_state_dict(ckpt["discriminator"])
    return gan.to(device).eval()


def _describe_cohort(identity: dict[str, Any]) -> str:
    keys = ("path", "patients", "n_genes", "image_size")
    return ", ".join(f"{k} {identity[k]}" for k in keys if k in identity)


def inspect_runs(runs: Sequence[Path | str], cohort: CuratedCohort) -> pd.DataFrame:
    """What the run folders ``runs`` hold, checked against the cohort they are evaluated on.

    One row per run: run (folder), model, seed, step (of its checkpoint), steps (it was
    configured for) and finished (``step >= steps``). Raises :class:`StaleRunError` for a run
    trained on another cohort, and :class:`TrainingError` for two runs of the same model and
    seed (their results would overwrite each other).
    """
    here = cohort_identity(cohort)
    rows: list[dict[str, Any]] = []
    for run in map(Path, runs):
        ckpt = load_checkpoint(run)
        model, seed, step = str(ckpt["gan"]["name"]), int(ckpt["seed"]), int(ckpt["step"])
        # checkpoints written before the cohort was recorded: compare the sizes only
        trained = ckpt.get("cohort") or {
            "n_genes": int(ckpt["gan"]["n_genes"]),
            "image_size": int(ckpt["gan"]["image_size"]),
        }
        if any(trained[k] != here[k] for k in ("sha256", "n_genes", "image_size") if k in trained):
            raise StaleRunError(
                f"run {run} ({model}, seed {seed}) was trained on another cohort "
                f"({_describe_cohort(trained)}), not on the cohort it is evaluated on "
                f"({_describe_cohort(here)}); evaluate it with the cohort it was trained on"
            )
        twin = next((r["run"] for r in rows if (r["model"], r["seed"]) == (model, seed)), None)
        if twin is not None:
            raise TrainingError(
                f"runs {twin} and {run} are both {model} with seed {seed}: their results would "
                "overwrite each other; evaluate them in separate calls (other --out folders)"
            )
        steps = int(ckpt["config"]["train"]["steps"])
        rows.append(
            {
                "run": str(run),
                "model": model,
                "seed": seed,
                "step": step,
                "steps": steps,
                "finished": step >= steps,
            }
        )
    return pd.DataFrame(rows, columns=["run", "model", "seed", "step", "steps", "finished"])


def read_log(out: Path | str) -> pd.DataFrame:
    """The per-step log of a run (``log.jsonl``) as a frame, one row per logged step."""
    path = Path(out) / LOG
    if not path.is_file():
        raise TrainingError(f"no training log at {path}")
    return pd.read_json(path, lines=True)


def read_samples(out: Path | str) -> list[dict[str, np.ndarray]]:
    """The sample grids a run saved as it trained, in step order (arrays in [0, 1])."""
    found = sorted((Path(out) / "samples").glob("step_*.npz"))
    return [dict(np.load(p)) for p in found]


def finished_runs(
    cohort: CuratedCohort,
    cfg: Profile,
    run_dir: Callable[[str, int], Path],
    models: Sequence[str],
    seeds: Sequence[int] | None = None,
    trained_by: str = "notebooks/02_training.ipynb",
) -> pd.DataFrame:
    """The finished runs of ``models`` x ``seeds`` (``cfg.train.seeds`` by default) in
    ``run_dir(model, seed)``, trained on ``cohort`` with ``cfg``; never trains.

    One row per run, as :func:`radiolib.train.train_models` gives it: model, seed, steps,
    seconds, images_per_s, out and the last logged loss terms. Raises :class:`MissingRunError`
    naming every run that is missing, unfinished or made with other settings or data, and
    ``trained_by``, what trains them.
    """
    from radiolib.models import build_gan

    n_genes = int(np.shape(cohort.genes)[1])
    image_size = int(np.shape(cohort.tumour_images)[-1])
    rows, problems = [], []
    for model in models:
        build_gan(model, n_genes, image_size, cfg.model)  # an unknown model name is a ValueError
        for seed in seeds if seeds is not None else cfg.train.seeds:
            out = Path(run_dir(model, seed))
            done_path = out / DONE
            if not done_path.is_file():
                why = "unfinished" if (out / CHECKPOINT).is_file() else "not trained"
                problems.append(f"{model} seed {seed} ({why}: {out})")
                continue
            done = read_json(done_path)
            expected = fingerprint(model, n_genes, image_size, cohort, cfg, seed)
            if done.get("fingerprint") != expected or done.get("steps") != cfg.train.steps:
                problems.append(f"{model} seed {seed} (trained with other settings or data: {out})")
                continue
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "steps": done["steps"],
                    "seconds": round(float(done["seconds"]), 1),
                    "images_per_s": round(float(done["images_per_s"]), 1),
                    "out": str(out),
                    **done.get("losses", {}),
                }
            )
    if problems:
        raise MissingRunError(
            f"{len(problems)} run(s) this needs are not finished for these settings: "
            + "; ".join(problems)
            + f". Run {trained_by} first (it trains them with the same profile and overrides)"
        )
    return pd.DataFrame(rows)
