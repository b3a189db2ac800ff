"""The study's profiles: one source of truth for every size, count and step number.

Three profiles exist:

* ``smoke``: the whole study in a few minutes on two CPU cores (tests and CI).
* ``quick``: the default of ``make book``; about twelve minutes on two CPU cores (32 px).
* ``paper``: the paper's scale (130 patients, 500 epochs), meant for a GPU.

A profile is a tree of frozen dataclasses. ``get_profile("quick", {"train.steps": 50})``
returns a copy with single parameters overridden by dotted name; values given as strings
(from a command line) are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROFILE_ENV = "RADIOLIB_PROFILE"
DEFAULT_PROFILE = "quick"


@dataclass(frozen=True)
class PhantomConfig:
    """The synthetic cohort written by ``radiolib.data.phantom`` (its defaults are the
    phantom's: ``write_phantom`` and ``simulate_biology`` take theirs from here)."""

    patients: int = 48
    seed: int = 0
    subtypes: int = 3
    signal: float = 1.0
    matrix: int = 256  # in-plane voxels of each CT slice


@dataclass(frozen=True)
class CurationConfig:
    """The paper's section 3 data preparation (``radiolib.data.curate``)."""

    spacing_mm: float = 1.0  # isotropic resampling
    voi_mm: float = 60.0  # edge of the cube around tumours and background centres
    image_size: int = 64  # network grid (pixels) every slice is resized to
    hu_window: tuple[float, float] = (-1000.0, 400.0)  # HU mapped to [0, 1]
    background_vois: int = 2  # background VOIs per patient
    background_slices: int = 20  # random axial slices per background VOI
    background_min_mm: float = 5.0  # centres this far inside the lung boundary ...
    background_max_mm: float = 25.0  # ... and no farther
    test_fraction: float = 0.25  # share of patients held out (patient-level split)
    seed: int = 0
    workers: int = 0  # processes curating patients at once; 0: one per CPU core (no result changes)


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes shared by the three GANs (``radiolib.models``)."""

    code_dim: int = 128  # gene code phi(g)
    gene_hidden: int = 256  # width of the first fully connected layer of the mapping
    # probability that training zeroes an input gene of a gene mapping (both GANs' phi(g), and
    # the discriminator's own with d_gene_code "own"); evaluation reads every gene. Not in the
    # paper: with ~5000 genes and ~100 donors it keeps the code from telling donors apart by
    # single genes (book/method.md has the measurements)
    gene_dropout: float = 0.5
    noise_dim: int = 16
    g_channels: int = 32  # generator width at the finest level
    d_channels: int = 32  # discriminator width at the finest level
    lambda_background: float = 10.0  # weight of the background L1
    erosion_px: int = 5  # square structuring element of the eroded inverse mask
    lambda_inpaint_l1: float = 10.0  # inpainting GAN's reconstruction weight
    inpaint_margin: float = 1.2  # inpainted disk radius / tumour radius
    # the proposed generator's mechanism (radiolib.models.blocks.FusionBlock); "paper" values
    # are the paper read literally, the defaults what the study measured to work (book/method.md)
    weight_map: str = "gate"  # "gate": own 1x1 conv, no batch norm | "paper": sigmoid(mean(BN))
    gate_bias: float = -2.0  # the gate's starting logit (background side)
    # "weighted": AdaIN(o) with statistics over the region the map opens, gate once |
    # "object": AdaIN(o) over the whole plane, gate once | "gated": AdaIN(a * o)
    adain_input: str = "weighted"
    mask_source: str = "head"  # "head": G_m is an output of its own | "map": the finest map
    # with mask_source "head": weight of an L1 that pulls the finest weight map onto the
    # (detached) predicted mask, so the map separates while the mask keeps its own output
    lambda_map_to_mask: float = 10.0
    # the gene code D_ISG reads: "shared": the generator's phi(g), trained by the discriminator's
    # step too (to tell matched from mismatched genes) | "generator": the generator's phi(g),
    # detached in the D step (MC-GAN's trainer) | "own": a mapping of the discriminator's own
    d_gene_code: str = "shared"


# variants of a model that change only its mechanism options (ModelConfig fields), trained
# beside the three models so the book shows what each departure from the paper does
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # the paper read literally: the map is the batch-normalised first half (channel mean), AdaIN
    # normalises the gated features, the mask is a separate output, and D_ISG reads the
    # generator's code as MC-GAN's trainer does (detached in the discriminator's step)
    "proposed-paper": (
        "proposed",
        {
            "weight_map": "paper",
            "adain_input": "gated",
            "mask_source": "head",
            "lambda_map_to_mask": 0.0,
            "d_gene_code": "generator",
            "gene_dropout": 0.0,
        },
    ),
    # one change each: D_ISG reads the generator's code detached in the D step (MC-GAN), or a
    # code of the discriminator's own
    "proposed-mcgan-code": ("proposed", {"d_gene_code": "generator"}),
    "proposed-own-code": ("proposed", {"d_gene_code": "own"}),
    # every input gene read in training too (the paper's mapping)
    "proposed-no-gene-dropout": ("proposed", {"gene_dropout": 0.0}),
    # earlier designs, without gene dropout as they were measured: AdaIN's statistics over the
    # whole object plane, not the region the map opens ...
    "proposed-object-adain": ("proposed", {"adain_input": "object", "gene_dropout": 0.0}),
    # ... and the mask as the finest weight map itself (so the discriminators that judge the
    # mask shape the map), with AdaIN over the whole object plane
    "proposed-mask-is-map": (
        "proposed",
        {
            "mask_source": "map",
            "lambda_map_to_mask": 0.0,
            "adain_input": "object",
            "gene_dropout": 0.0,
        },
    ),
}


def model_options(name: str, model: ModelConfig) -> ModelConfig:
    """The model options that model ``name`` trains with: ``model``, with a variant's changes."""
    if name in VARIANTS:
        return dataclasses.replace(model, **VARIANTS[name][1])
    return model


@dataclass(frozen=True)
class TrainConfig:
    """One trainer for the three models (``radiolib.train``)."""

    batch_size: int = 32
    steps: int = 400
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema: float = 0.0  # 0 disables the generator EMA
    checkpoint_every: int = 100
    log_every: int = 10
    sample_every: int = 100
    seeds: tuple[int, ...] = (0,)
    num_workers: int = 0
    # runs that train_models trains at once, each in its own process with its share of the
    # threads: two runs of a small network use two cores better than one run does. The weights
    # differ from one-at-a-time runs in the last bits (other thread counts sum in other orders)
    parallel_runs: int = 1
    # torch.compile the generator for the training step (fused kernels; sums in another order,
    # so the losses differ from eager ones in the last bits, and gene dropout draws other masks
    # than eager); the first step pays the compile.
    # One process only: under torchrun the step runs eager
    compile: bool = True


@dataclass(frozen=True)
class EvaluationConfig:
    """Synthesis quality (``radiolib.evaluation``) and the radiogenomic map."""

    pairs: int = 256  # held-out (gene, background) pairs per method
    bootstrap: int = 1000
    inpaint_region_scale: float = 1.5  # Table 1 region for inpainting, x inpainted radius
    clusters: int = 3
    tsne_perplexity: float = 15.0
    classifier_steps: int = 300
    # phantom signal strengths at which notebook 02 trains, and notebook 04 scores, the proposed and
    # baseline GANs (the signal sweep); empty: no sweep (its runs do not fit the quick budget)
    sweep_signals: tuple[float, ...] = (0.25, 1.0)
    map_steps: int = 400  # training steps per model in the sweep (= train.steps: reuse main runs)
    map_signals: tuple[float, ...] = (0.25, 1.0)  # signal strengths of the map comparison
    # mechanism variants of the proposed GAN (radiolib.models.VARIANTS) trained beside the three
    # models, on the same data and seeds, for the ablation of notebook 03
    variants: tuple[str, ...] = ("proposed-paper",)
    map_seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of the map comparison
    map_phantom_seeds: tuple[int, ...] = (1, 2)  # other phantoms compared at the profile's signal
    map_subtypes: tuple[int, ...] = (2, 3, 4, 5)  # hidden subtype counts compared


@dataclass(frozen=True)
class ContrastiveConfig:
    """The contrastive image-gene map (``radiolib.contrastive``): no generator, no discriminator.

    The gene encoder has the GANs' mapping shape (``model.gene_hidden``, ``model.code_dim``).
    """

    steps: int = 300  # full-batch steps: every training patient in every step
    lr: float = 1e-3
    weight_decay: float = 1e-4  # AdamW, decoupled
    temperature: float = 0.1  # initial InfoNCE temperature
    learn_temperature: bool = True  # learnt as log(1 / temperature), as in CLIP
    image_width: int = 16  # channels of the image encoder's first convolution
    image_layers: int = 3  # stride-2 convolutions of the image encoder


@dataclass(frozen=True)
class Profile:
    name: str
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every parameter by dotted name, e.g. ``{"train.steps": 400, ...}``."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            for f in dataclasses.fields(getattr(self, section)):
                out[f"{section}.{f.name}"] = getattr(getattr(self, section), f.name)
        return out


SECTIONS = ("phantom", "curation", "model", "train", "evaluation", "contrastive")

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        phantom=PhantomConfig(patients=10, matrix=160),
        curation=CurationConfig(image_size=32, background_vois=1, background_slices=20),
        model=ModelConfig(code_dim=32, gene_hidden=64, noise_dim=8, g_channels=8, d_channels=8),
        train=TrainConfig(
            batch_size=8,
            steps=12,
            checkpoint_every=6,
            log_every=2,
            sample_every=6,
            compile=False,
        ),
        evaluation=EvaluationConfig(
            pairs=24,
            bootstrap=200,
            tsne_perplexity=3.0,
            classifier_steps=20,
            sweep_signals=(0.5, 1.0),
            map_signals=(0.5, 1.0),
            map_steps=12,
            map_seeds=(0, 1),
            map_phantom_seeds=(1,),
            map_subtypes=(2, 3),
        ),
        contrastive=ContrastiveConfig(steps=40, image_width=8),
    ),
    # the real cohort's 130 patients (about 36 held-out donors) and two training seeds: intervals
    # over both, see notebook 03; 32 px (a quarter of the FLOPs of 64 px), no signal sweep,
    # eager (at 32 px torch.compile measured no faster and pays its compile per run)
    "quick": Profile(
        name="quick",
        phantom=PhantomConfig(patients=130),
        curation=CurationConfig(test_fraction=0.3, image_size=32),
        train=TrainConfig(seeds=(0, 1), compile=False, parallel_runs=2),
        evaluation=EvaluationConfig(sweep_signals=()),
    ),
    "paper": Profile(
        name="paper",
        phantom=PhantomConfig(patients=130, matrix=384),
        curation=CurationConfig(image_size=128, background_vois=2),
        model=ModelConfig(g_channels=32, d_channels=64),
        train=TrainConfig(
            batch_size=64,
            steps=30000,
            ema=0.999,
            checkpoint_every=1000,
            log_every=50,
            sample_every=1000,
            seeds=(0, 1, 2),
            num_workers=4,
            compile=False,  # measured on the CPU only; on a GPU: -p train.compile=true
        ),
        evaluation=EvaluationConfig(
            pairs=1024,
            bootstrap=2000,
            tsne_perplexity=30.0,
            classifier_steps=2000,
            sweep_signals=(0.25, 0.5, 1.0, 2.0),
            map_signals=(0.25, 0.5, 1.0, 2.0),
            map_steps=30000,
        ),
    ),
}


def profile_names() -> list[str]:
    return list(PROFILES)


def default_profile_name() -> str:
    """The profile named by ``$RADIOLIB_PROFILE``, else ``quick``; ``ValueError`` for a name
    that is no profile."""
    name = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE)
    if name not in PROFILES:
        raise ValueError(
            f"{PROFILE_ENV}={name!r} names no profile; choose one of {', '.join(PROFILES)}"
        )
    return name


def _convert(value: Any, current: Any, name: str) -> Any:
    if not isinstance(value, str) or isinstance(current, str):
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
            kind = type(current[0]) if current else float
            return tuple(kind(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"parameter {name!r}: cannot read {value!r} as {type(current).__name__}"
        ) from None
    return value


def get_profile(name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile (default: ``$RADIOLIB_PROFILE`` or ``quick``) with overrides applied.

    ``overrides`` maps dotted names (``"train.steps"``) to values; unknown names raise
    ``ValueError`` listing the valid ones.
    """
    name = name or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if not overrides:
        return profile
    valid = profile.flat()
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(
                f"unknown parameter {key!r}; valid names are section.field, e.g. "
                f"{', '.join(sorted(valid)[:6])} ... (all: radiolib study --list-parameters)"
            )
        section, leaf = key.split(".", 1)
        sections.setdefault(section, {})[leaf] = _convert(value, valid[key], key)
    for section, changes in sections.items():
        profile = dataclasses.replace(
            profile, **{section: dataclasses.replace(getattr(profile, section), **changes)}
        )
    _validate(profile)
    return profile


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["train.steps=50", ...]`` -> ``{"train.steps": "50"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected name=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


# Least value of every count and interval (an int field) and of sizes that must be positive;
# a step interval of 0 would divide by zero, a negative one would fire at every step.
_MINIMUM: dict[str, float] = {
    "phantom.patients": 4,
    "phantom.seed": 0,
    "phantom.subtypes": 2,
    "phantom.signal": 0,
    "phantom.matrix": 64,
    "curation.background_vois": 0,
    "curation.background_slices": 0,
    "curation.seed": 0,
    "curation.workers": 0,
    "model.code_dim": 1,
    "model.gene_hidden": 1,
    "model.noise_dim": 0,
    "model.g_channels": 1,
    "model.d_channels": 1,
    "model.lambda_background": 0,
    "model.lambda_map_to_mask": 0,
    "model.erosion_px": 0,
    "model.lambda_inpaint_l1": 0,
    "model.inpaint_margin": 1,
    "train.batch_size": 2,
    "train.steps": 1,
    "train.beta1": 0,
    "train.beta2": 0,
    "train.checkpoint_every": 1,
    "train.log_every": 1,
    "train.sample_every": 1,
    "train.num_workers": 0,
    "train.parallel_runs": 1,
    "evaluation.pairs": 2,
    "evaluation.bootstrap": 1,
    "evaluation.clusters": 2,
    "evaluation.classifier_steps": 1,
    "evaluation.map_steps": 1,
    "evaluation.map_seeds": 0,
    "evaluation.map_phantom_seeds": 0,
    "evaluation.map_subtypes": 2,
    "contrastive.steps": 1,
    "contrastive.weight_decay": 0,
    "contrastive.image_width": 1,
    "contrastive.image_layers": 1,
}
_DEFAULTS = Profile(name="defaults").flat()  # each field's type
# Sizes that must be strictly positive.
_POSITIVE = (
    "curation.spacing_mm",
    "curation.voi_mm",
    "train.lr",
    "evaluation.inpaint_region_scale",
    "evaluation.tsne_perplexity",
    "contrastive.lr",
    "contrastive.temperature",
)


def _field_problems(flat: dict[str, Any]) -> list[str]:
    """What is wrong with single numbers of ``flat`` (dotted name -> value): not finite, below
    their least value, not positive, or not whole where the field is an int."""
    problems = []
    for name, value in flat.items():
        values = value if isinstance(value, tuple) else (value,)
        if not values or isinstance(value, bool):
            continue
        if not all(isinstance(v, numbers.Real) for v in values):
            continue  # names (model.weight_map, evaluation.variants): checked by the section
        if not all(math.isfinite(v) for v in values):
            problems.append(f"{name} must be finite (got {value})")
        elif name in _MINIMUM and min(values) < _MINIMUM[name]:
            problems.append(f"{name} must be >= {_MINIMUM[name]:g} (got {value})")
        elif name in _POSITIVE and not min(values) > 0:
            problems.append(f"{name} must be > 0 (got {value})")
        elif isinstance(_DEFAULTS[name], int) and not isinstance(value, numbers.Integral):
            problems.append(f"{name} must be a whole number (got {value})")
    return problems


def image_size_problem(image_size: int) -> str | None:
    """Why ``image_size`` cannot be the networks' grid (a power of two >= 16), or None."""
    if image_size < 16 or image_size & (image_size - 1):
        return f"image_size must be a power of two >= 16 (got {image_size})"
    return None


def curation_problems(c: CurationConfig) -> list[str]:
    """Everything wrong with a curation configuration (empty when it is valid)."""
    problems = _field_problems({f"curation.{k}": v for k, v in dataclasses.asdict(c).items()})
    if c.spacing_mm > 0 and c.voi_mm < 4 * c.spacing_mm:
        problems.append(f"curation.voi_mm must be >= 4 voxels (got {c.voi_mm} mm)")
    if size := image_size_problem(c.image_size):
        problems.append(f"curation.{size}")
    if not 0 < c.test_fraction < 1:
        problems.append(f"curation.test_fraction must be in (0, 1) (got {c.test_fraction})")
    if not c.hu_window[0] < c.hu_window[1]:
        problems.append(f"curation.hu_window must be increasing (got {c.hu_window})")
    if not 0 < c.background_min_mm < c.background_max_mm:
        problems.append("curation.background_min_mm must be > 0 and < background_max_mm")
    return problems


def check_curation(c: CurationConfig) -> None:
    """ValueError listing :func:`curation_problems` when there are any."""
    problems = curation_problems(c)
    if problems:
        raise ValueError("; ".join(problems))


def _validate(profile: Profile) -> None:
    c, t = profile.curation, profile.train
    others = {k: v for k, v in profile.flat().items() if not k.startswith("curation.")}
    problems = _field_problems(others) + curation_problems(c)
    m = profile.model
    for name, value, choices in (
        ("weight_map", m.weight_map, ("gate", "paper")),
        ("adain_input", m.adain_input, ("weighted", "object", "gated")),
        ("mask_source", m.mask_source, ("head", "map")),
        ("d_gene_code", m.d_gene_code, ("generator", "own", "shared")),
    ):
        if value not in choices:
            problems.append(f"model.{name} must be one of {', '.join(choices)} (got {value!r})")
    if not 0 <= m.gene_dropout < 1:
        problems.append(f"model.gene_dropout must be in [0, 1) (got {m.gene_dropout})")
    if m.lambda_map_to_mask > 0 and m.mask_source != "head":
        problems.append(
            "model.lambda_map_to_mask needs model.mask_source = 'head' "
            f"(with {m.mask_source!r} the mask is the map: set model.lambda_map_to_mask = 0; "
            f"got {m.lambda_map_to_mask})"
        )
    unknown = [v for v in profile.evaluation.variants if v not in VARIANTS]
    if unknown:
        problems.append(f"evaluation.variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if not 0 <= t.ema < 1:
        problems.append(f"train.ema must be in [0, 1) (got {t.ema})")
    if not (t.beta1 < 1 and t.beta2 < 1):
        problems.append(f"train.beta1 and train.beta2 must be < 1 (got {t.beta1}, {t.beta2})")
    if not t.seeds:
        problems.append("train.seeds must name at least one seed")
    elif min(t.seeds) < 0:
        problems.append(f"train.seeds must be >= 0 (got {t.seeds})")
    if not profile.evaluation.map_signals:
        problems.append("evaluation.map_signals must name at least one signal")
    elif min(profile.evaluation.map_signals) < 0:
        problems.append(
            f"evaluation.map_signals must be >= 0 (got {profile.evaluation.map_signals})"
        )
    if not profile.evaluation.map_seeds:
        problems.append("evaluation.map_seeds must name at least one seed")
    if c.image_size % 2**profile.contrastive.image_layers:
        problems.append(
            f"curation.image_size {c.image_size} must be divisible by 2 ** contrastive."
            f"image_layers ({2**profile.contrastive.image_layers})"
        )
    if problems:
        raise ValueError("; ".join(problems))


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda (got {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


for _p in PROFILES.values():
    _validate(_p)
