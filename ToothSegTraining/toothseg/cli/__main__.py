"""``python -m toothseg.cli ARGS`` (the Slicer module's background processes, ``torchrun -m``)."""

import sys

from .main import main

sys.exit(main())
