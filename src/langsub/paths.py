"""Where the project's files are: conf/, data/, assets/ (a checkout, or LANGSUB_ROOT)."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # a checkout: where conf/ and data/ are


def project_root() -> Path:
    """Where conf/, data/ and assets/ are: LANGSUB_ROOT, else this checkout, else the cwd;
    exported as LANGSUB_ROOT (paths.root_dir reads it)."""
    default = _PACKAGE_ROOT if (_PACKAGE_ROOT / "conf").is_dir() else Path.cwd()
    return Path(os.environ.setdefault("LANGSUB_ROOT", str(default)))
