"""A plain clone is all a user has: nothing in the repo may read files beside it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Built from parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared")
# Installed or generated, never committed (see .gitignore).
SKIPPED = {".git", ".venv", "node_modules", "build", "dist", "__pycache__", ".test-cache"}


def _skipped(part: str) -> bool:
    return part in SKIPPED or part.endswith((".egg-info", "_cache"))


def repo_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file() and not any(_skipped(p) for p in path.relative_to(ROOT).parts)
    ]


def test_nothing_refers_to_files_outside_the_repo() -> None:
    offenders = []
    for path in repo_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for needle in OUTSIDE:
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


def test_the_contract_and_the_architecture_are_in_the_repo() -> None:
    assert "type Query" in (ROOT / "contract.graphql").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/architecture.md)" in readme
    assert (ROOT / "docs" / "architecture.md").is_file()
