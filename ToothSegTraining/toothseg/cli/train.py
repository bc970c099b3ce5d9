"""``toothseg train RECIPE`` — the same entry point as ``ToothSegTraining/train.py``."""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_train_parser", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..train.config.loader import load_recipe
    from ..train.engine.pipeline import run_recipe, snapshot_stage

    logging.getLogger("toothseg.train").setLevel(logging.INFO)
    if args.stage and not args.snapshot:
        raise InputError("--stage goes with --snapshot")
    if args.snapshot and args.restart:
        raise InputError("--snapshot reads a run and --restart deletes it: give one of them")
    recipe, raw = load_recipe(args.recipe, args.set or [])
    if args.snapshot:
        folder, stage, step = snapshot_stage(recipe, raw, args.output, args.snapshot, args.stage)
        print(f"model folder: {folder} (stage {stage}, checkpoint of step {step})")
        return 0
    result = run_recipe(recipe, raw, output=args.output, device=args.device, restart=args.restart, quiet=args.quiet)
    if result.interrupted:
        print("training interrupted; run the same command again to resume")
        return 130
    print(f"model folder: {result.model}")
    for stage in result.stages:
        if stage.metrics:
            print(f"  {stage.folder.parent.name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                              for k, v in stage.metrics.items()))
    return 0


def add_train_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train or fine-tune a model from a recipe (YAML)",
                       description="Run a training recipe: all its stages, resuming where a previous run of the same "
                                   "recipe stopped. Works under torchrun (one process per GPU or CPU group).")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set stages.0.iterations=100; --set stages.0=null drops "
                        "a stage (repeatable)")
    p.add_argument("--output", metavar="DIR", help="run folder (default: the recipe's output_dir or runs/NAME)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--restart", action="store_true", help="delete the run folder and start from scratch")
    p.add_argument("--snapshot", metavar="DEST",
                   help="do not train: write the run's latest checkpoint as a model folder in DEST (to score a long "
                        "run half-way while it goes on)")
    p.add_argument("--stage", metavar="NAME", help="with --snapshot: the stage (default: the last with a checkpoint)")
    p.set_defaults(func=cmd_train)
