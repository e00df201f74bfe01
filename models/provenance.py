"""Which code trained a model: the package version, and the git commit when run from a checkout."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["code_version"]


@cache
def code_version() -> str:
    """``"<package version>"``, plus ``"+g<commit>"`` (and ``".dirty"``) inside a git checkout.

    >>> code_version().split("+")[0].count(".") >= 1
    True
    """
    try:
        package = version("riskstream")
    except PackageNotFoundError:
        package = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+g{commit}" + (".dirty" if dirty else "")
