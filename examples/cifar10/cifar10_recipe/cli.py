"""The recipe's command line: ``python examples/cifar10/train.py`` (or ``python -m cifar10_recipe.cli``).

Parses the flags (one per :class:`~cifar10_recipe.config.TrainConfig` field, each overriding the preset) and hands
the run to :class:`cifar10_recipe.run_manager.RunManager`; every error a user can cause ends as one message.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .checkpoint import CheckpointError
from .config import add_config_arguments, presets_help
from .data import DatasetError
from .presets import PRESETS
from .run_manager import STOPPED_EXIT_STATUS, RunStopped, TrainingError
from .run_setup import evaluate_checkpoint, open_run

RUN_FLAGS = ("preset", "resume", "eval", "allow_config_change")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a dynconv model on CIFAR-10.", epilog=presets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_mutually_exclusive_group()
    parser.add_argument("--preset", default="cpu", help=f"named recipe (default cpu): {', '.join(PRESETS)}")
    actions.add_argument("--resume", metavar="RUN_DIR",
                         help="continue the run in RUN_DIR from its last checkpoint; 'auto': the run in --out if it "
                              "has a checkpoint, else start it there (for job scripts and torchrun restarts)")
    actions.add_argument("--eval", metavar="CHECKPOINT", help="only evaluate a .safetensors checkpoint")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept flags that change the saved configuration")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 (with one message on stderr) on any error a user can cause,
    75 after a stop signal (SIGTERM, SIGINT) once a resumable checkpoint is written (one line on stdout says how to
    resume)."""
    args = parse_args(argv)
    command = ["examples/cifar10/train.py", *(sys.argv[1:] if argv is None else argv)]
    overrides = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
    try:
        if args.eval:
            evaluate_checkpoint(Path(args.eval), overrides)
        else:
            run = open_run(args.preset, overrides, args.resume, args.allow_config_change, argv=command)
            run.start()
    except RunStopped as stopped:
        print(stopped, flush=True)
        return STOPPED_EXIT_STATUS
    except (DatasetError, CheckpointError, TrainingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
