"""The ``radiolib`` command: phantom | curate | train | evaluate | convergence | compare-maps |
study | bench | synthesize | fetch."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path

from radiolib import __version__
from radiolib.config import get_profile, parse_assignments, profile_names
from radiolib.errors import RadiolibError

TRACEBACK_ENV = "RADIOLIB_TRACEBACK"
DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"

# ``radiolib phantom`` flags: each overrides the profile's ``phantom.<name>``
PHANTOM_FLAGS = {
    "patients": (int, "number of patients (default: the profile's phantom.patients)"),
    "seed": (int, "random seed of the cohort (default: phantom.seed)"),
    "subtypes": (int, "number of hidden tumour subtypes (default: phantom.subtypes)"),
    "signal": (float, "strength of the gene-image link, 0 = none (default: phantom.signal)"),
    "matrix": (int, "in-plane voxels of each CT slice (default: phantom.matrix)"),
}


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        default=None,
        choices=profile_names(),
        help="study profile (default: $RADIOLIB_PROFILE or quick)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one profile parameter, e.g. -p train.steps=100 (repeatable)",
    )


def _device(value: str) -> str:
    """The one spelling of ``--device`` every command accepts (checked before any work)."""
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(f"invalid device {value!r}; choose {DEVICE_HELP}")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", type=_device, help=f"where to run: {DEVICE_HELP}")


def _profile(args: argparse.Namespace, extra: dict[str, object] | None = None):
    """The chosen profile with the ``-p`` overrides, then ``extra`` (explicit flags) on top."""
    overrides = {**parse_assignments(args.param), **(extra or {})}
    return get_profile(args.profile, overrides)


def cmd_phantom(args: argparse.Namespace) -> int:
    from radiolib.data.phantom import write_phantom

    flags = {f"phantom.{k}": getattr(args, k) for k in PHANTOM_FLAGS}
    cfg = _profile(args, {k: v for k, v in flags.items() if v is not None})
    print(write_phantom(Path(args.out), **dataclasses.asdict(cfg.phantom)))
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from radiolib.data.curate import curate_cohort
    from radiolib.data.curated import curation_report

    workers = {} if args.workers is None else {"curation.workers": args.workers}
    cohort = curate_cohort(
        Path(args.data), Path(args.out), _profile(args, workers).curation, replace=args.replace
    )
    print("\n".join(curation_report(cohort)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from radiolib.train import train_from_args

    result = train_from_args(
        model=args.model,
        data=Path(args.data),
        profile=_profile(args),
        out=Path(args.out),
        seed=args.seed,
        device=args.device,
        resume=not args.no_resume,
    )
    print(result)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from radiolib.evaluation import evaluate_runs

    truth = None
    if args.truth:
        from radiolib.data.phantom import load_truth

        truth = load_truth(Path(args.truth))
    result = evaluate_runs(
        Path(args.data),
        [Path(c) for c in args.checkpoints],
        _profile(args),
        device=args.device,
        out=Path(args.out),
        truth=truth,
    )
    print(result.results.to_string(index=False))
    for run in result.runs.itertuples():
        if not run.finished:
            print(
                f"warning: run {run.run} is unfinished: its checkpoint is at step {run.step} "
                f"of the {run.steps} it was configured for; its scores are those of that step",
                file=sys.stderr,
            )
    return 0


def cmd_convergence(args: argparse.Namespace) -> int:
    from radiolib.convergence import convergence_study
    from radiolib.data.curated import load_curated
    from radiolib.io import atomic_write

    truth = None
    if args.truth:
        from radiolib.data.phantom import load_truth

        truth = load_truth(Path(args.truth))
    out = Path(args.out)

    def save(frame) -> None:
        with atomic_write(out / "convergence.csv", "w") as fh:
            frame.to_csv(fh, index=False)

    frame = convergence_study(
        load_curated(Path(args.data)),
        _profile(args),
        lambda model, seed: out / "runs" / f"{model}-seed{seed}",
        steps=[int(s) for s in args.steps.split(",")],
        seeds=[int(s) for s in args.seeds.split(",")],
        models=args.models.split(","),
        truth=truth,
        device=args.device,
        on_step=save,
    )
    print(f"convergence study: {len(frame)} rows in {out / 'convergence.csv'}")
    return 0


def cmd_compare_maps(args: argparse.Namespace) -> int:
    from radiolib import maps

    cfg = _profile(args)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else cfg.evaluation.map_seeds
    gans = [m for m in args.gan.split(",") if m]
    if args.data:
        if not args.truth:
            raise ValueError("--data needs --truth, the phantom folder the cohort was curated from")
        if gans:
            raise ValueError("--gan trains GANs in the study's workspace; leave out --data")
        from radiolib.data.curated import load_curated
        from radiolib.data.phantom import load_truth

        frame = maps.compare_cohort(
            load_curated(Path(args.data)), load_truth(Path(args.truth)), cfg, seeds
        )
        maps.write_tidy(frame, Path(args.out))
    else:
        from radiolib import sweeps
        from radiolib.study import open_workspace

        ws = open_workspace(
            args.profile, device=args.device, overrides=parse_assignments(args.param)
        )
        frame = sweeps.compare_maps(
            ws, seeds=seeds, gan_models=gans, steps=args.steps, out=Path(args.out)
        )
    table = maps.summary_table(frame, maps.SUMMARY_MEASURES)
    print(table.to_string(float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {args.out}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from radiolib.study import run_study

    if args.list_parameters:
        for name, value in _profile(args).flat().items():
            print(f"{name} = {value}")
        return 0
    run_study(
        profile=args.profile,
        data=args.data,
        device=args.device,
        overrides=parse_assignments(args.param),
        build=not args.no_book,
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from radiolib.bench import format_bench, run_bench

    print(format_bench(run_bench(_profile(args), device=args.device, steps=args.steps)))
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from radiolib.synthesize import parse_position, synthesize

    result = synthesize(
        args.checkpoint,
        args.genes,
        args.background,
        args.out,
        position_mm=None if args.position is None else parse_position(args.position),
        data=args.data,
        seed=args.seed,
        device=args.device,
    )
    print(
        f"synthetic slice ({int(result.mask.sum())} tumour pixels) written to {result.out}: "
        + ", ".join(str(p.relative_to(result.out)) for p in result.files.values())
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from radiolib.data.fetch import describe, fetch

    patients = [p for item in args.patients for p in item.split(",") if p] or None
    manifest = fetch(Path(args.out), patients=patients, dry_run=args.dry_run)
    print(describe(manifest))
    if args.dry_run:
        print(f"dry run: nothing downloaded; run without --dry-run to download into {args.out}")
    else:
        citations = Path(args.out) / manifest["citations"]
        print(f"cohort in {args.out}; cite the data as listed in {citations}")
    return 0


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write the synthetic cohort (DICOM CT + SEG, GEO table)",
        description="Write the synthetic cohort with the profile's phantom parameters; each "
        "flag below overrides one of them (and wins over -p phantom.NAME=...).",
    )
    p.add_argument("--out", required=True, help="folder to write the cohort into")
    for name, (kind, text) in PHANTOM_FLAGS.items():
        p.add_argument(f"--{name}", type=kind, default=None, help=text)
    _profile_args(p)
    p.set_defaults(func=cmd_phantom)


def _add_curate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curate", help="curate a raw cohort (phantom or real) as in the paper")
    p.add_argument("--data", required=True, help="raw cohort folder")
    p.add_argument("--out", required=True, help="curated cohort folder")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a curated cohort in --out that was made from another --data folder",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes curating patients at once (default: the profile's curation.workers, "
        "0 = one per CPU core; 1 = one at a time); the result is the same for any number",
    )
    _profile_args(p)
    p.set_defaults(func=cmd_curate)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one GAN on a curated cohort")
    p.add_argument(
        "--model",
        required=True,
        choices=["proposed", "baseline", "inpainting"],
        help="which GAN: the paper's proposed one, the MC-GAN baseline or the inpainting GAN",
    )
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log, samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data order")
    _device_arg(p)
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )
    _profile_args(p)
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Table 1 and the study's measures for trained models")
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="where the results CSV goes")
    _device_arg(p)
    p.add_argument(
        "--truth", default=None, help="phantom folder: add the measures that need its hidden truth"
    )
    p.add_argument("checkpoints", nargs="+", help="run folders written by radiolib train")
    _profile_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_convergence(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convergence", help="train to each step count of a grid and evaluate at each (on demand)"
    )
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="folder for the runs and convergence.csv")
    p.add_argument("--truth", default=None, help="phantom folder: add the measures of its truth")
    p.add_argument("--steps", default="100,200,400,800", help="comma-separated step counts")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--models", default="proposed,baseline", help="comma-separated models")
    _device_arg(p)
    _profile_args(p)
    p.set_defaults(func=cmd_convergence)


def _add_compare_maps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-maps",
        help="score raw genes, the contrastive and conventional maps (and GANs) the same way",
    )
    p.add_argument("--out", required=True, help="tidy CSV to write")
    p.add_argument("--data", default=None, help="one curated cohort (else the profile's phantoms)")
    p.add_argument("--truth", default=None, help="with --data: the phantom folder it came from")
    p.add_argument("--seeds", default=None, help="comma-separated (evaluation.map_seeds)")
    p.add_argument("--gan", default="", help="comma-separated GANs to add, e.g. proposed,baseline")
    p.add_argument("--steps", type=int, default=None, help="GAN steps (evaluation.map_steps)")
    _device_arg(p)
    _profile_args(p)
    p.set_defaults(func=cmd_compare_maps)


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run every notebook headless, then build the Jupyter Book")
    p.add_argument("--data", default="phantom", help="'phantom' (default) or a real cohort folder")
    _device_arg(p)
    p.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    p.add_argument(
        "--list-parameters",
        action="store_true",
        help="print every parameter of the profile after the -p overrides, and exit",
    )
    _profile_args(p)
    p.set_defaults(func=cmd_study)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="parameters, FLOPs and speed of the three GANs")
    _device_arg(p)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    _profile_args(p)
    p.set_defaults(func=cmd_bench)


def _add_synthesize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synthesize",
        help="paint a nodule from a gene vector into a CT slice; write NIfTI and DICOM CT + SEG",
    )
    p.add_argument("--checkpoint", required=True, help="run folder written by radiolib train")
    p.add_argument(
        "--genes",
        required=True,
        help="a patient id of the curated cohort, or a CSV of 'gene,value' (as genes.csv)",
    )
    p.add_argument(
        "--background",
        required=True,
        help="index of a curated background slice, or a CT series folder (with --position)",
    )
    p.add_argument(
        "--position", default=None, metavar="X,Y,Z", help="slice centre in mm (patient LPS)"
    )
    p.add_argument("--out", required=True, help="output folder (NIfTI, dicom/CT, dicom/SEG)")
    p.add_argument("--data", default=None, help="curated cohort folder (default: the run's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator's noise")
    _device_arg(p)
    p.set_defaults(func=cmd_synthesize)


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the real NSCLC Radiogenomics cohort (internet)",
        description="Download, via the NCI Imaging Data Commons, the CT and TCIA SEG series of "
        "the RNA-seq patients, and the GEO expression table. An interrupted download resumes: "
        "series already complete are skipped.",
    )
    p.add_argument("--out", required=True, help="folder to download the cohort into")
    p.add_argument(
        "--patients",
        nargs="+",
        default=[],
        metavar="ID",
        help="only these patients, e.g. --patients R01-003 R01-004 (or comma-separated)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the selection (patients, series, size, what is already here); download nothing",
    )
    p.set_defaults(func=cmd_fetch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radiolib", description=__doc__)
    parser.add_argument("--version", action="version", version=f"radiolib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_phantom(sub)
    _add_curate(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_convergence(sub)
    _add_compare_maps(sub)
    _add_study(sub)
    _add_bench(sub)
    _add_synthesize(sub)
    _add_fetch(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error becomes a message on stderr (no traceback) and a non-zero exit.

    Bad input, bad parameters and file system errors exit 1 with their message; anything else
    exits 2 with its type and message (``RADIOLIB_TRACEBACK=1`` shows where it came from).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RadiolibError, ValueError, OSError) as error:
        print(f"radiolib {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"radiolib {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(
            f"radiolib {args.command}: unexpected error: {type(error).__name__}: "
            f"{' '.join(str(error).split())} (set {TRACEBACK_ENV}=1 to see where)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
