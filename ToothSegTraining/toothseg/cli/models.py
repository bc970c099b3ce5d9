"""``toothseg models …``: list, show, add, verify and import model folders."""

from __future__ import annotations

import argparse
import json

from ._common import add_progress_lines_option

__all__ = ["add_models_parser"]


def _catalog():
    from ..core.models.catalog import load_catalog

    return load_catalog()


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _catalog()
    rows = [(e.id, e.input_kind, e.status(), ("default " + "/".join(e.default_for)) if e.default_for else "", e.name)
            for e in catalog.entries]
    width = max((len(r[0]) for r in rows), default=2)
    for model_id, kind, status, default, name in rows:
        print(f"{model_id:<{width}}  {kind}  {status:<13} {default:<12} {name}")
    return 0


def _print_card(folder) -> None:
    from ..core.models.folder import read_card

    card = read_card(folder)
    print(f"  folder: {folder}")
    print(f"  classes: {card.num_classes} ({', '.join(str(v) for v in card.class_values[1:][:40])})")
    if card.spacing_zyx:
        print(f"  input spacing ({card.input_axes}): {card.spacing_zyx} mm")
    if card.patch_size:
        print(f"  patch ({card.input_axes}): {card.patch_size}")
    if card.sliding_window:
        print(f"  windows: {json.dumps(card.sliding_window)}")
    print(f"  mirror axes for TTA: {card.mirror_axes or 'none'}")
    if card.nnunet is not None:
        print("  inference: nnU-Net's arithmetic (the plan is on the card; no post-processing)")
    if card.metrics:
        print(f"  validation metrics: {json.dumps(card.metrics)}")
    if card.provenance:
        print(f"  provenance: {json.dumps(card.provenance)}")


def cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.models.folder import read_card

    catalog = _catalog()
    entry = next((e for e in catalog.entries if e.id == args.id), None)
    if entry is None:  # a model folder given by path (or an unknown ID: resolve says which)
        folder = catalog.resolve(args.id)
        entry = next((e for e in catalog.entries if e.folder and Path(e.folder).resolve() == folder.resolve()), None)
    if entry is None:
        card = read_card(folder)
        print(f"{card.id}: {card.name or card.id} (model folder, not installed in the catalogue)")
        for label, value in (("input", card.input_kind), ("architecture", card.architecture),
                             ("licence", card.license)):
            if value:
                print(f"  {label}: {value}")
        if card.description:
            print(f"  {card.description}")
        _print_card(folder)
        return 0
    print(f"{entry.id}: {entry.name}")
    for label, value in (("input", entry.input_kind), ("method", entry.method), ("labels", entry.labels),
                         ("architecture", entry.architecture), ("status", entry.status()),
                         ("licence", entry.license), ("citation", entry.citation)):
        if value:
            print(f"  {label}: {value}")
    if entry.description:
        print(f"  {entry.description}")
    if entry.available:
        _print_card(entry.folder)
    else:
        print(f"  how to get it: {entry.source.get('how', 'not available')}")
        for url in entry.source.get("urls", []):
            print(f"    {url}")
        sha = entry.source.get("sha256")
        print(f"  expected SHA-256: {sha or 'none published'}"
              + (f" ({entry.source['sha256_note']})" if entry.source.get("sha256_note") else ""))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    entry = _catalog().add_folder(args.path, overwrite=args.overwrite)
    print(f"added model {entry.id!r} ({entry.input_kind}) to {entry.folder}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from ..core.models.download import download_model
    from ..core.progress import CancelToken, Progress, cancel_on_sigterm, print_progress_line

    token = CancelToken()
    if args.progress_lines:
        callback = print_progress_line
    else:
        def callback(fraction: float, stage: str) -> None:
            if not args.quiet:
                print(f"\r{fraction * 100:5.1f} % {stage}".ljust(60), end="", flush=True)
    with cancel_on_sigterm(token):
        entry = download_model(_catalog(), args.id, Progress(callback, token), overwrite=args.overwrite)
    print(f"\ninstalled model {entry.id!r} in {entry.folder}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..core.models.folder import verify_model_folder

    folder = _catalog().resolve(args.id)
    for line in verify_model_folder(folder):
        print(line)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..core.errors import InputError
    from ..core.models import importers
    from ..core.progress import interrupt_on_sigterm

    if args.out is None and not args.install:
        raise InputError("give --out FOLDER for the new model folder, or --install to put it straight into your "
                         "model folders")
    model_id = args.id or f"{args.format}-imported"
    with interrupt_on_sigterm(), tempfile.TemporaryDirectory(prefix="toothseg-import-") as scratch:
        destination = args.out or str(Path(scratch) / model_id)
        if args.format == "rail":
            out = importers.import_rail_students(args.vnet or [], args.resvnet or [], destination, model_id,
                                                 overwrite=args.overwrite)
        elif args.zip:
            if args.checkpoint or args.plans or args.dataset:
                raise InputError("give either --zip or --checkpoint/--plans/--dataset, not both")
            out = importers.import_nnunet_zip(args.zip, destination, configuration=args.configuration,
                                              folds=args.folds, checkpoint_name=args.checkpoint_name,
                                              model_id=model_id, overwrite=args.overwrite)
        else:
            missing = [name for name in ("checkpoint", "plans", "dataset") if not getattr(args, name)]
            if missing:
                raise InputError("nnunet import needs --zip, or " + ", ".join(f"--{m}" for m in missing))
            out = importers.import_nnunet_checkpoint(args.checkpoint, args.plans, args.dataset, destination,
                                                     configuration=args.configuration or "3d_fullres",
                                                     model_id=model_id, overwrite=args.overwrite)
        if args.install:
            entry = _catalog().add_folder(out, overwrite=args.overwrite)
            print(f"installed model {entry.id!r} in {entry.folder}")
            return 0
    print(f"wrote model folder {out}; check it with 'toothseg models verify {out}', install with "
          f"'toothseg models add {out}'")
    return 0


def _weights_dtype(args: argparse.Namespace) -> str | None:
    """``--half`` / ``--int8`` as a storage type (None: as the source stores them)."""
    return "int8" if args.int8 else "float16" if args.half else None


def _add_weights_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--half", action="store_true", help="store floating-point weights as float16 (half the size)")
    group.add_argument("--int8", action="store_true",
                       help="store convolution weights as int8 with one scale per output channel, the rest as "
                            "float16 (about a quarter of float32; the network still runs in float32): measure the "
                            "copy's accuracy before publishing it")


def cmd_pack(args: argparse.Namespace) -> int:
    from ..core.models.catalog import load_catalog
    from ..core.models.folder import pack_model_folder

    source = load_catalog().resolve(args.source)
    dtype = _weights_dtype(args)
    out = pack_model_folder(source, args.destination, weights_dtype=dtype, overwrite=args.overwrite, new_id=args.id,
                            new_name=args.name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote model folder {out} ({size / 1e6:.1f} MB{f', {dtype} weights' if dtype else ''})")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from ..core.models.catalog import load_catalog
    from ..core.models.folder import ensemble_model_folder

    catalog = load_catalog()
    members = [catalog.resolve(member) for member in args.members]
    dtype = _weights_dtype(args)
    out = ensemble_model_folder(members, args.destination, args.id, name=args.name, weights_dtype=dtype,
                                overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote ensemble model folder {out} ({len(members)} members, {size / 1e6:.1f} MB"
          f"{f', {dtype} weights' if dtype else ''}); install it with 'toothseg models add {out}'")
    return 0


def add_models_parser(sub, common: argparse.ArgumentParser, parser_class: type) -> None:

    models = sub.add_parser("models", parents=[common], help="list, show, add, verify and import models",
                            description="The model catalogue (Resources/Models/catalog.json) and your model folders "
                                        "($TOOTHSEG_MODELS_DIR, default ~/.toothseg/models).")
    verbs = models.add_subparsers(dest="models_command", metavar="VERB", required=True, parser_class=parser_class)
    p = verbs.add_parser("list", parents=[common], help="all catalogue and installed models")
    p.set_defaults(func=cmd_list)
    p = verbs.add_parser("show", parents=[common], help="model card, or where to get the weights")
    p.add_argument("id", help="catalogue ID or model folder")
    p.set_defaults(func=cmd_show)
    p = verbs.add_parser("add", parents=[common], help="verify a model folder and install it")
    p.add_argument("path")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_add)
    p = verbs.add_parser("get", parents=[common],
                         help="download a catalogue model's archive, check its SHA-256, install",
                         description="Only entries with source.archive (url + sha256) can be downloaded; the others "
                                     "say how to obtain and import their weights ('toothseg models show ID').")
    p.add_argument("id")
    p.add_argument("--overwrite", action="store_true")
    add_progress_lines_option(p)
    p.set_defaults(func=cmd_get)
    p = verbs.add_parser("verify", parents=[common], help="check a model's card, SHA-256 and weights")
    p.add_argument("id", help="catalogue ID or model folder")
    p.set_defaults(func=cmd_verify)
    p = verbs.add_parser("pack", parents=[common],
                         help="copy a model folder for bundling or sharing (optionally float16 or int8)",
                         description="Copy a verified model folder, members included, to a new folder; --half stores "
                                     "the weights as float16, --int8 the convolution weights as int8 with per-channel "
                                     "scales (the network still runs in float32).")
    p.add_argument("source", help="catalogue ID or model folder")
    p.add_argument("destination", help="new model folder")
    _add_weights_options(p)
    p.add_argument("--id", help="the copy's model ID (e.g. to install a changed copy of a bundled model)")
    p.add_argument("--name", help="the copy's display name")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_pack)
    p = verbs.add_parser("ensemble", parents=[common],
                         help="one model folder averaging several models' class probabilities",
                         description="Snapshots, folds or runs of one recipe as one model: its prediction is the "
                                     "members' mean class probability. The members must be run alike (classes, "
                                     "spacing or X-ray extent, normalisation, patch size, mirror axes); the first "
                                     "difference is named.")
    p.add_argument("destination", help="new model folder")
    p.add_argument("members", nargs="+", help="catalogue IDs or model folders (two or more)")
    p.add_argument("--id", required=True, help="the ensemble's model ID")
    p.add_argument("--name", help="its display name")
    _add_weights_options(p)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_ensemble)
    p = verbs.add_parser("import-checkpoint", parents=[common],
                         help="convert RAIL or nnU-Net/U-Mamba2 checkpoints into a model folder",
                         description="Checkpoints are read with torch.load(weights_only=True): pickled code is "
                                     "refused.")
    p.add_argument("format", choices=("rail", "nnunet"))
    p.add_argument("--out", help="new model folder (optional with --install)")
    p.add_argument("--install", action="store_true",
                   help="install the model into your model folders (as 'toothseg models add' does)")
    p.add_argument("--id", help="model ID for the card")
    p.add_argument("--vnet", nargs="+", metavar="PTH", help="RAIL V-Net student checkpoints")
    p.add_argument("--resvnet", nargs="+", metavar="PTH", help="RAIL ResVNet student checkpoints")
    p.add_argument("--checkpoint", nargs="+", metavar="PTH",
                   help="nnU-Net checkpoint_final.pth / checkpoint_best.pth; one per fold for a fold ensemble "
                        "(logits averaged, as nnUNetv2_predict does)")
    p.add_argument("--plans", help="nnU-Net plans.json")
    p.add_argument("--dataset", help="nnU-Net dataset.json")
    p.add_argument("--configuration",
                   help="plans configuration (default 3d_fullres; with --zip: the one model in the archive)")
    p.add_argument("--zip", metavar="FILE",
                   help="an nnU-Net model zip as distributed (Dataset…/Trainer__Plans__configuration/fold_N/…)")
    p.add_argument("--folds", nargs="+", metavar="N", help="with --zip: only these folds (default: all it holds)")
    p.add_argument("--checkpoint-name", default="checkpoint_final.pth",
                   help="with --zip: checkpoint file of each fold (default checkpoint_final.pth)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import)
