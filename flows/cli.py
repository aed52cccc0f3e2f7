"""`vqvp`: the user's command line.

    vqvp run [--preset tiny|tiny-long|paper] [-S k=v ...] [--stages S ...]   the end-to-end Prefect flow
    vqvp rerun STAGE [--downstream]                             one stage (or it and all after it)
    vqvp stage STAGE [-S section.key=value ...]                 one stage in this process, as dvc.yaml calls it
    vqvp predict VIDEO --out OUT.mp4 [--start N] [--temperature T] [--seed S]
                                                                4 frames of VIDEO in, 16 frames out
    vqvp lineage RUN_ID|models:/NAME@ALIAS                       the chain back to the raw source
    vqvp human-eval invite|raters|revoke|serve|analyze DIR    the rating study and its table
    vqvp params [--preset NAME] [-S ...]                        print the validated params

Heavy imports (prefect, torch, mlflow) happen inside the commands that need them.
"""
from __future__ import annotations

import argparse
import os
import sys

from vqvp_core import presets  # the preset files only (not the schema: keeps `vqvp -h` fast)

PRESET_NAMES = tuple(presets.names())

# The ephemeral Prefect server would try to phone home (and log an error on a closed network).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect waits 20 s for its ephemeral server by default; a fresh machine's first start (the database
# migrations) under load can take longer, and then `vqvp run` failed in its first minute.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
EXIT_STOPPED = 130  # stopped by Ctrl-C or SIGTERM (the shell's 128 + SIGINT)


def _add_overrides(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a params value (repeatable); written to params.yaml first, as `dvc exp run -S` "
                         "(vqvp stage -S applies to one invocation and leaves params.yaml alone)")


def _check_params(preset: str | None, overrides: list[str]) -> int:
    """Validate before Prefect starts, so a bad value fails in a second, not after set-up."""
    from vqvp_core.config import ConfigError, apply_overrides, load_params, preset_dict, validate

    try:
        if preset:
            validate(apply_overrides(preset_dict(preset), overrides))
        else:
            load_params(overrides=overrides)
    except ConfigError as exc:
        print(f"vqvp: {exc}", file=sys.stderr)
        return 2
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _add_flow_options(parser) -> None:
    _add_gpu_slots(parser)
    parser.add_argument("--dvc-remote", action="store_true",
                        help="each stage pulls its missing inputs from the DVC remote first and pushes "
                             "its outputs after (for stages that run on separate machines)")


def _add_gpu_slots(parser) -> None:
    parser.add_argument("--gpu-slots", type=_positive_int, default=None, metavar="N",
                        help="GPU stages allowed to run at once on this machine (slot locks in "
                             "$VQVP_GPU_LOCK_DIR, default <tmp>/vqvp-gpu-slots; released by the OS when a "
                             "stage ends or is killed); default: keep the count in force (1 if never set)")


def _stoppable(run_flow) -> int:
    """Run a flow so that Ctrl-C and SIGTERM stop it within seconds: SIGTERM is turned into
    KeyboardInterrupt, and the running stage's process group is stopped (flows.pipeline._stream)."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        ran = run_flow()
    except KeyboardInterrupt:
        print("\nvqvp: stopped (its stages were stopped too; a rerun resumes from their checkpoints)",
              file=sys.stderr)
        return EXIT_STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_where(ran)
    return 0


def cmd_run(args) -> int:
    if _check_params(args.preset, args.overrides):
        return 2
    from flows.pipeline import pipeline

    return _stoppable(lambda: pipeline(preset=args.preset, overrides=args.overrides, repo=args.repo,
                                       stages=args.stages, gpu_slots=args.gpu_slots, remote=args.dvc_remote))


def cmd_rerun(args) -> int:
    from flows.pipeline import rerun

    return _stoppable(lambda: rerun(stage=args.stage, downstream=args.downstream, repo=args.repo,
                                    gpu_slots=args.gpu_slots, remote=args.dvc_remote))


def _print_where(ran: list[str]) -> None:
    if ran:
        print("\nvqvp: stages run:", ", ".join(ran))
    else:
        print("\nvqvp: nothing to run: every stage is up to date (DVC skipped them all)")
    print("  clips:        data/clips/ (manifest.parquet, rejected.csv)")
    print("  metrics:      metrics/*.json   (dvc metrics show)")
    print("  MLflow UI:    mlflow ui --backend-store-uri sqlite:///mlflow.db")
    print("  Prefect UI:   prefect server start   (then open http://127.0.0.1:4200)")


def cmd_stage(args) -> int:
    from stages import stage_main
    from vqvp_core.dag import DagError

    if args.stage is None:
        return _stage_help(args.stage_list)
    try:
        main = stage_main(args.stage)
    except KeyError as exc:
        print(f"vqvp: {exc.args[0]}", file=sys.stderr)
        return 2
    except DagError as exc:
        print(f"vqvp stage: {exc} (run stages in a vqvp project, or set VQVP_WORKDIR to one)", file=sys.stderr)
        return 2
    return main(args.stage_args)  # everything after the name is the stage's own (vqvp stage NAME -h)


def _stage_help(asked: bool) -> int:
    """`vqvp stage -h`: the stages, in pipeline order, with the first line of each one's docstring."""
    import importlib

    from vqvp_core.dag import placement, stages

    out = sys.stdout if asked else sys.stderr
    print("usage: vqvp stage STAGE [-S section.key=value ...] [--params FILE] [--no-progress]\n\n"
          "Run one pipeline stage in this process, as dvc.yaml calls it (vqvp stage STAGE -h: its options).\n\n"
          "stages, in pipeline order:", file=out)
    for name in stages():
        doc = (importlib.import_module(f"stages.{name}").__doc__ or "").strip().splitlines()
        where = placement(name)
        print(f"  {name:<20} [{where}] {doc[0] if doc else ''}", file=out)
    return 0 if asked else 2


def cmd_params(args) -> int:
    from vqvp_core.config import ConfigError, apply_overrides, dump_params, load_params, preset_dict, validate

    try:
        params = (validate(apply_overrides(preset_dict(args.preset), args.overrides)) if args.preset
                  else load_params(overrides=args.overrides))
    except ConfigError as exc:
        print(f"vqvp: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dump_params(params))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vqvp_core.dag import DagError, stages

    try:
        STAGES = stages()  # dvc.yaml's, in pipeline order
    except DagError:  # outside a vqvp project: predict, human-eval and params still work
        STAGES = None

    ap = argparse.ArgumentParser(prog="vqvp", description="Video prediction with VQ-VAE: pipeline commands")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the end-to-end pipeline as a Prefect flow")
    run.add_argument("--preset", choices=PRESET_NAMES, default=None,
                     help="rewrite params.yaml from this preset first (default: use params.yaml as it is)")
    _add_overrides(run)
    run.add_argument("--repo", default=".", help="the vqvp/DVC repository (default: here)")
    run.add_argument("--stages", nargs="+", choices=STAGES, default=None, metavar="STAGE",
                     help="only these stages, in pipeline order (default: all); DVC still skips those "
                          "that are up to date, and their inputs must exist (run the stages before them first)")
    _add_flow_options(run)

    rerun = sub.add_parser("rerun", help="force one stage (or it and everything after it) through Prefect + DVC")
    rerun.add_argument("stage", choices=STAGES, help="the stage to run again (vqvp stage -h lists them)")
    rerun.add_argument("--downstream", action="store_true", help="also every stage after it")
    rerun.add_argument("--repo", default=".", help="the vqvp/DVC repository (default: here)")
    _add_flow_options(rerun)
    run.set_defaults(func=cmd_run)
    rerun.set_defaults(func=cmd_rerun)

    # `vqvp stage -h` lists the stages with their placement; `vqvp stage NAME -h` is the stage's own
    stage = sub.add_parser("stage", help="run one stage in this process, as dvc.yaml calls it", add_help=False)
    stage.add_argument("-h", "--help", action="store_true", dest="stage_list", help="list the stages")
    stage.add_argument("stage", nargs="?", help=f"one of: {', '.join(STAGES or ['(no dvc.yaml here)'])}")
    stage.add_argument("stage_args", nargs=argparse.REMAINDER, help="the stage's own options (vqvp stage NAME -h)")
    stage.set_defaults(func=cmd_stage)

    from commands import human_eval, lineage, predict  # each adds its own options to its subparser

    for name, module, help_text in (
            ("predict", predict, "4 frames of a video in, 16 predicted frames out"),
            ("lineage", lineage, "the runs, datasets and models behind a run id or models:/NAME@ALIAS"),
            ("human-eval", human_eval, "invite raters (invite DIR -n N), serve the rating study (serve DIR), "
                                       "print its table (analyze DIR)")):
        parser = sub.add_parser(name, help=help_text, description=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)

    params = sub.add_parser("params", help="print the validated params (from params.yaml or a preset)")
    params.add_argument("--preset", choices=PRESET_NAMES, default=None,
                        help="print this preset's params (default: params.yaml's)")
    _add_overrides(params)
    params.set_defaults(func=cmd_params)
    return ap


def main(argv: list[str] | None = None) -> int:
    """One argparse tree: every command's options are in it (`vqvp COMMAND -h`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
