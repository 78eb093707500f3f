"""Node.js and npm packages for tests that drive Concord with third-party JavaScript clients.

Packages are installed at an exact version into `.cache/node/<name>@<version>/` inside the
repository (ignored by git), once; later runs reuse them. Without node or npm a test skips
with the reason on a laptop and fails under CI=true, like a missing database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.services import unavailable

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "node"


def node() -> str:
    """The node executable (skip or fail the test without one)."""
    found = shutil.which("node")
    if found is None:
        unavailable("node is not installed (needed to run a JavaScript client)")
    assert found is not None
    return found


def npm_package(name: str, version: str) -> Path:
    """The `node_modules` folder holding `name@version` (and its dependencies)."""
    folder = CACHE / f"{name.replace('/', '+')}@{version}"
    modules = folder / "node_modules"
    installed = modules / name / "package.json"
    if installed.exists():
        return modules
    npm = shutil.which("npm")
    if npm is None:
        unavailable(f"npm is not installed (needed to install {name}@{version})")
    assert npm is not None
    folder.mkdir(parents=True, exist_ok=True)
    # --no-package-lock: nothing with download URLs is written; --ignore-scripts: no
    # install hooks run.
    result = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(folder),
            "--no-save",
            "--no-package-lock",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            f"{name}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )
    if result.returncode != 0 or not installed.exists():
        unavailable(f"npm could not install {name}@{version}: {result.stderr[-2000:]}")
    return modules
