"""``toothseg``: the parser of every command and the one place that turns failures into exit statuses.

Every failure the user can cause ends with one line on stderr and a non-zero exit status
(1 bad input or output, 2 bad usage, 130 interrupted); ``--debug`` shows tracebacks. Each command
lives in its own module of this package (``segment``, ``convert``, ``export_stl``, ``models``, ``al``,
``data``, ``evaluate``, ``train``, ``demo``) with its ``add_*_parser``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import CancelledError, ToothSegError
from ._common import EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, Parser, silence_library_warnings
from .al import add_al_parser
from .convert import add_convert_parser
from .data import add_data_parser
from .demo import add_demo_parser
from .evaluate import add_evaluate_parser
from .export_stl import add_export_stl_parser
from .models import add_models_parser
from .segment import add_segment_parser
from .train import add_train_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="toothseg", description="Tooth segmentation for dental CBCT and panoramic X-rays.",
                     epilog="Coordinates are LPS millimetres (DICOM/ITK/Slicer convention) unless stated.")
    parser.add_argument("--version", action="version", version=f"toothseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common = argparse.ArgumentParser(add_help=False)  # the same switches after the command name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    add_convert_parser(sub, common)
    add_export_stl_parser(sub, common)
    add_demo_parser(sub, common)
    add_segment_parser(sub, common)
    add_train_parser(sub, common)
    add_evaluate_parser(sub, common)
    add_models_parser(sub, common, Parser)
    add_al_parser(sub, common, Parser)
    add_data_parser(sub, common, Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="toothseg: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if not args.debug:
        silence_library_warnings()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # output piped into 'head' meets the closed pipe here, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader went away ('toothseg models list | head -1'): nothing to say to anyone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except CancelledError:
        print("toothseg: cancelled; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("toothseg: interrupted; no partial output was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ToothSegError as exc:
        if args.debug:
            raise
        print(f"toothseg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        if args.debug:
            raise
        print("toothseg: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        print(f"toothseg: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, with a way to see more
        if args.debug:
            raise
        print(f"toothseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL
