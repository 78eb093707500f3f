"""npm packages the tests drive Concord with, installed on first use into an ignored cache.

Each package set gets a folder of its own under `.test-cache/npm/` (in .gitignore): exact
versions, no package.json or lock file written into the repo. Without node or npm, or when
the install fails, the test is skipped on a laptop and fails under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.services import unavailable

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".test-cache" / "npm"


def node() -> str:
    """The node executable; unavailable() when it is not installed."""
    path = shutil.which("node")
    if path is None:
        unavailable("node is not installed (needed to run the npm clients)")
    assert path is not None
    return path


def _installed(folder: Path, name: str, version: str) -> bool:
    manifest = folder / "node_modules" / name / "package.json"
    try:
        return bool(json.loads(manifest.read_text(encoding="utf-8"))["version"] == version)
    except (OSError, ValueError, KeyError):
        return False


def npm_packages(packages: dict[str, str]) -> Path:
    """Install `packages` (name → exact version) once; their node_modules folder."""
    node()
    folder = CACHE / "-".join(f"{name.replace('/', '_')}@{v}" for name, v in packages.items())
    if all(_installed(folder, name, version) for name, version in packages.items()):
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed (needed to install the npm clients)")
    assert npm is not None
    folder.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in packages.items()]
    result = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(folder),
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            *specs,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 or not all(_installed(folder, n, v) for n, v in packages.items()):
        unavailable(f"npm install {' '.join(specs)} failed: {result.stderr.strip()[-500:]}")
    return folder / "node_modules"
