"""Which code produced a result: library versions and the git commit.

A leaf module (the standard library only), so every layer that writes a
result file records the same provenance.
"""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

#: The distributions every tfkd number depends on.
CORE_DISTRIBUTIONS = ("tfkd", "tensorflow", "keras", "gymnasium")


def installed_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout tfkd is imported from, or None when it is not one."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        top, commit = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=checkout, capture_output=True,
            text=True, timeout=10, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    # Only the checkout that holds this tfkd counts, not a repository it is installed inside.
    return commit if os.path.realpath(top) == os.path.realpath(checkout) else None


def versions(extra: Sequence[str] = ()) -> dict:
    """Versions of tfkd, the libraries its numbers depend on and ``extra`` ones
    (None: not installed), and the git commit."""
    found = {name: installed_version(name) for name in (*CORE_DISTRIBUTIONS, *extra)}
    found["git_commit"] = git_commit()
    return found
