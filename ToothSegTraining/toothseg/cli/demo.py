"""``toothseg demo``: the main job on the bundled sample with the bundled model, offline."""

from __future__ import annotations

import argparse
import sys

from ._common import progress_bar

__all__ = ["add_demo_parser"]


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the main job on the bundled sample with the bundled model, offline."""
    from ..core.progress import CancelToken, cancel_on_sigterm
    from ..demo import run_demo

    print("ToothSeg demo: bundled sample CBCT (SYNTHETIC intensities on the real tooth shapes of STS-2024 "
          f"Validation_0002) with {'model ' + args.model if args.model else 'the bundled 3D model'}")
    progress, bar = progress_bar("demo", args.quiet)
    token = CancelToken()
    progress.token = token
    try:
        with cancel_on_sigterm(token):
            result = run_demo(args.out_dir, model=args.model, device=args.device, fast=args.fast,
                              picture=not args.no_picture, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"  model: {result.model}")
    print(f"  segmentation: {result.segmentation} ({len(result.teeth_found)} labels, "
          f"{result.seconds['segment']:.0f} s)")
    print(f"  surfaces: {result.stl_files} STL files (mm, LPS) in {result.stl_dir}")
    if result.picture:
        print(f"  picture: {result.picture}")
    if result.handedness:
        hand = result.handedness
        det = f" ({hand['determinant']:+.2f})" if hand.get("determinant") is not None else ""
        print(f"  left/right numbering: {hand['verdict']}{det}")
    for warning in result.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    m = result.metrics
    if m:
        missed = sorted(set(result.teeth_expected) - set(result.teeth_found))
        extra = sorted(set(result.teeth_found) - set(result.teeth_expected))
        print(f"  against the sample's true labels (STS-2024 protocol; synthetic intensities): tooth Dice "
              f"{m['instance_dsc']:.3f}, identification accuracy {m['ia']:.3f}, whole-dentition Dice "
              f"{m['image_dsc']:.3f}" + (f"; missed {missed}" if missed else "")
              + (f"; not in the truth {extra}" if extra else ""))
    if m and result.sample_seen_in_training is not None:
        print("  the sample's patient (Validation_0002) "
              + ("is in this model's training anatomy: these are not figures for a new patient (see the "
                 "benchmarks README for held-out ones)" if result.sample_seen_in_training else
                 "was left out of this model's training: these are figures for a patient it never saw"))
    print(f"  report: {result.report}")
    print(f"done; open {result.segmentation} or the STL files in 3D Slicer")
    return 0


def add_demo_parser(sub, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser("demo", parents=[common], help="run the main job on the bundled sample (offline)",
                          description="Segment the bundled sample CBCT (synthetic intensities on real tooth shapes) "
                                      "with the bundled 3D model; write a .seg.nrrd, one STL per tooth, an overview "
                                      "picture and a JSON report that scores the result against the sample's labels.")
    demo.add_argument("-o", "--out-dir", default="toothseg-demo", help="output folder (its demo files are replaced)")
    demo.add_argument("--model", metavar="ID|DIR", help="another 3D model (default: the bundled one)")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    demo.add_argument("--fast", action="store_true", help="no TTA and less window overlap (the CI setting)")
    demo.add_argument("--no-picture", action="store_true", help="skip the overview picture")
    demo.set_defaults(func=cmd_demo)
