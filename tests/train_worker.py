"""A tiny cohort and training run shared by tests/test_train.py and its subprocesses.

Run as a script it trains into a folder (used for the SIGKILL and two-process tests):

    python tests/train_worker.py OUT STEPS CHECKPOINT_EVERY
    torchrun --nproc_per_node 2 tests/train_worker.py OUT STEPS CHECKPOINT_EVERY
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radiolib.config import Profile, get_profile

N_PATIENTS, N_GENES, SIZE = 6, 40, 16


def tiny_cohort(seed: int = 0):
    """6 patients (4 train, 2 test), 3 tumour slices and 2 backgrounds each, 16 px, 40 genes."""
    from radiolib.data.curated import CuratedCohort

    rng = np.random.default_rng(seed)
    patients = [f"R01-{i:03d}" for i in range(N_PATIENTS)]
    split = np.array(["train", "train", "test", "train", "train", "test"])
    yy, xx = np.mgrid[:SIZE, :SIZE]
    tumours, masks, tumour_patient = [], [], []
    for p in range(N_PATIENTS):
        for _ in range(3):
            cy, cx = rng.uniform(5, SIZE - 5, 2)
            r = rng.uniform(2, 4)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            img = rng.uniform(0, 0.3, (SIZE, SIZE)) + 0.6 * mask
            tumours.append(np.clip(img, 0, 1))
            masks.append(mask)
            tumour_patient.append(p)
    backgrounds = rng.uniform(0, 0.5, (2 * N_PATIENTS, SIZE, SIZE))
    background_patient = np.repeat(np.arange(N_PATIENTS), 2)
    slices = pd.DataFrame(
        {
            "kind": ["tumour"] * len(tumours) + ["background"] * len(backgrounds),
            "patient_id": [patients[p] for p in tumour_patient]
            + [patients[p] for p in background_patient],
        }
    )
    slices["split"] = [split[patients.index(p)] for p in slices["patient_id"]]
    return CuratedCohort(
        path=Path("in-memory"),
        patients=patients,
        split=split,
        genes=rng.standard_normal((N_PATIENTS, N_GENES)).astype(np.float32),
        gene_names=[f"G{i}" for i in range(N_GENES)],
        tumour_images=np.asarray(tumours, np.float32),
        tumour_masks=np.asarray(masks, np.uint8),
        tumour_patient=np.asarray(tumour_patient),
        background_images=backgrounds.astype(np.float32),
        background_patient=background_patient,
        slices=slices,
        manifest={},
    )


def write_cohort(cohort, folder: Path) -> Path:
    """Write ``cohort`` in the curated folder format that ``load_curated`` reads."""
    from radiolib.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / "arrays.npz",
        patients=np.array(cohort.patients),
        split=cohort.split,
        genes=cohort.genes,
        gene_names=np.array(cohort.gene_names),
        tumour_images=cohort.tumour_images,
        tumour_masks=cohort.tumour_masks,
        tumour_patient=cohort.tumour_patient,
        background_images=cohort.background_images,
        background_patient=cohort.background_patient,
    )
    cohort.slices.to_csv(folder / "slices.csv", index=False)
    pd.DataFrame({"patient_id": cohort.patients, "split": cohort.split}).to_csv(
        folder / "patients.csv", index=False
    )
    write_json(folder / "manifest.json", {"source": "tests/train_worker.py", "seed": 0})
    return folder


def tiny_profile(**overrides) -> Profile:
    base = {
        "curation.image_size": SIZE,
        "model.g_channels": 4,
        "model.d_channels": 4,
        "model.code_dim": 8,
        "model.gene_hidden": 16,
        "model.noise_dim": 4,
        "model.erosion_px": 3,
        # gene dropout draws its masks per process and per compiled graph: the tests that
        # compare exact updates across those turn it off (the one-step test turns it on)
        "model.gene_dropout": 0.0,
        "train.batch_size": 4,
        "train.steps": 6,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.sample_every": 3,
    }
    base.update(overrides)
    return get_profile("smoke", base)


def tiny_gan(name: str = "proposed", seed: int = 0, **overrides):
    from radiolib.models import build_gan

    torch.manual_seed(seed)
    return build_gan(name, N_GENES, SIZE, tiny_profile(**overrides).model)


def main(argv: list[str]) -> None:
    import os

    from radiolib.train import train

    torch.set_num_threads(1)
    kill_at = int(os.environ.get("RADIOLIB_TEST_KILL_AT_SAVE", "0"))
    if kill_at:  # die half way through writing the kill_at-th checkpoint
        save, calls = torch.save, [0]

        def dying_save(obj, fh, *args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                fh.write(b"PK\x03\x04 half a checkpoint")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, fh, *args, **kwargs)

        torch.save = dying_save
    out, steps, every = Path(argv[0]), int(argv[1]), int(argv[2])
    cfg = tiny_profile(
        **{"train.steps": steps, "train.checkpoint_every": every, "train.sample_every": 1000}
    )
    gan = tiny_gan()
    delay = float(os.environ.get("RADIOLIB_TEST_STEP_DELAY", "0"))
    if delay:  # slow each step down so a test can kill the run mid-way on any machine
        generate = gan.generate

        def slow_generate(batch):
            time.sleep(delay)
            return generate(batch)

        gan.generate = slow_generate
    train(gan, tiny_cohort(), cfg, out, seed=0, device="cpu", progress=False)
    if "RANK" in os.environ:  # each rank leaves its own weights for the test to compare
        state = {
            "generator": gan.generator.state_dict(),
            "discriminator": gan.discriminator.state_dict(),
        }
        torch.save(state, out / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
