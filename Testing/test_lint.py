"""The whole repository passes its lint settings (``ruff.toml``: pyflakes, pycodestyle, bugbear, 120 columns).

Unused imports, undefined names, shadowed loop variables and over-long lines fail here, in CI, rather
than in review. Run ``.venv/bin/ruff check .`` to see the details (``--fix`` mends the safe ones).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_repository_passes_ruff():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in proc.stderr, "ruff is a dev dependency: make install"
    assert proc.returncode == 0, proc.stdout + proc.stderr
