"""The ``radiolib`` command: phantom | curate | train | evaluate | convergence | study | bench |
fetch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from radiolib.config import get_profile, parse_assignments, profile_names
from radiolib.errors import RadiolibError

TRACEBACK_ENV = "RADIOLIB_TRACEBACK"


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


def _profile(args: argparse.Namespace):
    return get_profile(args.profile, parse_assignments(args.param))


def cmd_phantom(args: argparse.Namespace) -> int:
    from radiolib.data.phantom import write_phantom

    summary = write_phantom(
        Path(args.out),
        patients=args.patients,
        seed=args.seed,
        subtypes=args.subtypes,
        signal=args.signal,
        matrix=args.matrix,
    )
    print(summary)
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from radiolib.data.curate import curate_cohort, curation_report

    cohort = curate_cohort(
        Path(args.data), Path(args.out), _profile(args).curation, replace=args.replace
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
    from radiolib.metrics import evaluate_runs

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
    from radiolib.data.curate import load_curated
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


def cmd_fetch(args: argparse.Namespace) -> int:
    from radiolib.data.fetch import fetch

    fetch(Path(args.out), dry_run=args.dry_run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radiolib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write the synthetic cohort (DICOM CT + SEG, GEO table)")
    p.add_argument("--out", required=True)
    p.add_argument("--patients", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subtypes", type=int, default=3)
    p.add_argument("--signal", type=float, default=1.0)
    p.add_argument("--matrix", type=int, default=256)
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("curate", help="curate a raw cohort (phantom or real) as in the paper")
    p.add_argument("--data", required=True, help="raw cohort folder")
    p.add_argument("--out", required=True, help="curated cohort folder")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a curated cohort in --out that was made from another --data folder",
    )
    _profile_args(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("train", help="train one GAN on a curated cohort")
    p.add_argument("--model", required=True, choices=["proposed", "baseline", "inpainting"])
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log, samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )
    _profile_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Table 1 and the study's measures for trained models")
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="where the results CSV goes")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--truth", default=None, help="phantom folder: add the measures that need its hidden truth"
    )
    p.add_argument("checkpoints", nargs="+", help="run folders written by radiolib train")
    _profile_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "convergence", help="train to each step count of a grid and evaluate at each (on demand)"
    )
    p.add_argument("--data", required=True, help="curated cohort folder")
    p.add_argument("--out", required=True, help="folder for the runs and convergence.csv")
    p.add_argument("--truth", default=None, help="phantom folder: add the measures of its truth")
    p.add_argument("--steps", default="100,200,400,800", help="comma-separated step counts")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--models", default="proposed,baseline", help="comma-separated models")
    p.add_argument("--device", default="auto")
    _profile_args(p)
    p.set_defaults(func=cmd_convergence)

    p = sub.add_parser("study", help="run every notebook headless, then build the Jupyter Book")
    p.add_argument("--data", default="phantom", help="'phantom' (default) or a real cohort folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    p.add_argument("--list-parameters", action="store_true", help="print every parameter and exit")
    _profile_args(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("bench", help="parameters, FLOPs and speed of the three GANs")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=5)
    _profile_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("fetch", help="download the real NSCLC Radiogenomics cohort (internet)")
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true", help="list what would be downloaded")
    p.set_defaults(func=cmd_fetch)
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
