"""Headless training entry point.

Runs identically as::

    python ToothSegTraining/train.py RECIPE.yaml [--set key=value ...]
    PythonSlicer ToothSegTraining/train.py RECIPE.yaml ...
    Slicer --no-main-window --python-script ToothSegTraining/train.py RECIPE.yaml ...
    torchrun --nproc_per_node=4 ToothSegTraining/train.py RECIPE.yaml ...

and is the same as ``toothseg train``. It imports no Qt and opens no window; inside Slicer it
leaves through ``slicer.util.exit`` so the application ends with the training's exit code.
"""

from __future__ import annotations

import os
import sys


def _exit(code: int) -> None:
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)  # Slicer --python-script: end the application with this status
    else:
        sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        import toothseg  # noqa: F401
    except ImportError:
        sys.path.insert(0, here)  # running from a source tree without installing the package
    from toothseg.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    _exit(main())
