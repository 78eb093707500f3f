"""Registering an ODBC driver for SQL Server with unixODBC, without touching /etc.

pyodbc (under `mssql+aioodbc`) reaches SQL Server through the unixODBC driver manager
(`libodbc.so.2`), which finds a driver by its name in `odbcinst.ini`. Microsoft ODBC Driver 18
ships inside the PyPI package `mssql-python-odbc` (pulled in by `mssql-python`), so every
virtualenv with the `mssql` extra already holds the library; what it lacks is an `odbcinst.ini`
naming it. `register_driver()` writes one into a directory of our own, and the environment
variable `ODBCSYSINI` points unixODBC at that directory. FreeTDS (Debian's `tdsodbc`) is
registered as well when it is installed: the fallback where Microsoft's library is missing.

unixODBC reads `ODBCSYSINI` once per process, at its first call, so it must be exported before
the process starts (the Makefile and `scripts/install-odbc-driver` do this); setting it later
in `os.environ` has no effect on a process that already used ODBC.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

MICROSOFT_DRIVER = "ODBC Driver 18 for SQL Server"
FREETDS_DRIVER = "FreeTDS"
INI_NAME = "odbcinst.ini"

_LIBRARY_VERSION = re.compile(r"libmsodbcsql-(\d+)\.(\d+)\.so")


class DriverNotFound(RuntimeError):
    """No ODBC driver library for SQL Server is installed on this machine."""


def default_directory() -> Path:
    """Where the project keeps its odbcinst.ini: inside the virtualenv it describes."""
    return Path(sys.prefix) / "etc" / "odbc"


def linux_family(root: Path = Path("/")) -> str:
    """The `mssql-python-odbc` build directory for this Linux distribution.

    The same test as mssql-python's own native loader (release files first), so both load the
    same binary; `/etc/os-release` settles the distributions that have no such files.
    """
    etc = root / "etc"
    if (etc / "alpine-release").exists():
        return "alpine"
    if (etc / "SuSE-release").exists() or (etc / "SUSE-brand").exists():
        return "suse"
    if (etc / "redhat-release").exists() or (etc / "centos-release").exists():
        return "rhel"
    family = _os_release_family(etc / "os-release")
    return family or "debian_ubuntu"


def _os_release_family(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    names: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in {"ID", "ID_LIKE"}:
            names.update(value.strip().strip('"').lower().split())
    if names & {"alpine"}:
        return "alpine"
    if names & {"suse", "sles", "opensuse"}:
        return "suse"
    if names & {"rhel", "fedora", "centos", "amzn"}:
        return "rhel"
    return None


def architecture(machine: str | None = None) -> str:
    """The architecture directory name `mssql-python-odbc` uses: `x86_64` or `arm64`."""
    name = (machine or platform.machine()).lower()
    if name in {"x86_64", "amd64", "x64"}:
        return "x86_64"
    if name in {"aarch64", "arm64"}:
        return "arm64"
    return name


def _odbc_package_libs() -> Path | None:
    # Located, not imported: the package is an optional extra and has no type information.
    spec = importlib.util.find_spec("mssql_python_odbc")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "libs"


def microsoft_library(libs: Path | None = None, root: Path = Path("/")) -> Path | None:
    """Microsoft ODBC Driver 18's library from `mssql-python-odbc`, or None (not Linux or absent).

    Only the build for this distribution and architecture is taken: the builds for other
    distributions link against other system libraries and may load but misbehave.
    """
    if not sys.platform.startswith("linux"):
        return None
    libs = libs if libs is not None else _odbc_package_libs()
    if libs is None:
        return None
    directory = libs / "linux" / linux_family(root) / architecture() / "lib"
    candidates = sorted(
        (
            path
            for path in directory.glob("libmsodbcsql-*.so*")
            if _LIBRARY_VERSION.match(path.name)
        ),
        key=_library_version,
    )
    return candidates[-1].resolve() if candidates else None


def _library_version(path: Path) -> tuple[int, int]:
    match = _LIBRARY_VERSION.match(path.name)
    assert match is not None  # filtered by the caller
    return int(match.group(1)), int(match.group(2))


def multiarch() -> str:
    """Debian's multiarch triplet (`x86_64-linux-gnu`), where it keeps ODBC drivers."""
    return str(sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu")


def freetds_library(root: Path = Path("/")) -> Path | None:
    """FreeTDS's ODBC driver where Debian (`tdsodbc`) or RHEL (`freetds`) install it."""
    for relative in (
        f"usr/lib/{multiarch()}/odbc/libtdsodbc.so",
        "usr/lib/odbc/libtdsodbc.so",
        "usr/lib64/libtdsodbc.so.0",
        "usr/lib64/libtdsodbc.so",
    ):
        path = root / relative
        if path.is_file():
            return path.resolve()
    return None


def installed_drivers(libs: Path | None = None, root: Path = Path("/")) -> dict[str, Path]:
    """Driver name → library for every SQL Server driver found, Microsoft's first."""
    drivers: dict[str, Path] = {}
    microsoft = microsoft_library(libs, root)
    if microsoft is not None:
        drivers[MICROSOFT_DRIVER] = microsoft
    freetds = freetds_library(root)
    if freetds is not None:
        drivers[FREETDS_DRIVER] = freetds
    return drivers


def driver_library() -> Path | None:
    """The library `concord` will use: Microsoft ODBC Driver 18, else FreeTDS, else None."""
    drivers = installed_drivers()
    return next(iter(drivers.values()), None)


def odbcinst_ini(drivers: dict[str, Path]) -> str:
    """The text of an odbcinst.ini registering `drivers` (name → library path)."""
    lines = [
        "# Written by Concord (models/odbc.py, scripts/install-odbc-driver); regenerated on",
        "# every run. Point unixODBC here with: export ODBCSYSINI=<this directory>",
    ]
    for name, library in drivers.items():
        description = (
            "Microsoft ODBC Driver 18 for SQL Server (from mssql-python-odbc)"
            if name == MICROSOFT_DRIVER
            else "FreeTDS ODBC driver (TDS protocol)"
        )
        lines += ["", f"[{name}]", f"Description={description}", f"Driver={library}"]
        lines.append("UsageCount=1")
    return "\n".join(lines) + "\n"


def register_driver(directory: Path) -> Path:
    """Write `directory/odbcinst.ini` naming the installed drivers; return the directory.

    Export the returned directory as `ODBCSYSINI` before starting Python. The file is only
    rewritten when its content changes, so running this again is harmless. Raises
    `DriverNotFound` when neither Microsoft's driver nor FreeTDS is installed.
    """
    return _register(directory)[0]


def _register(directory: Path) -> tuple[Path, bool]:
    drivers = installed_drivers()
    if not drivers:
        raise DriverNotFound(
            "no ODBC driver for SQL Server found: install the mssql extra "
            "(pip install -e '.[mssql]', which brings mssql-python-odbc with Microsoft ODBC "
            f"Driver 18 for {linux_family()}/{architecture()}), or FreeTDS "
            "(apt-get install tdsodbc)"
        )
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / INI_NAME
    text = odbcinst_ini(drivers)
    try:
        if target.read_text(encoding="utf-8") == text:
            return directory, False
    except FileNotFoundError:
        pass
    # Replace atomically: a process starting meanwhile sees the old file or the new one.
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".odbcinst-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return directory, True


def main(argv: list[str] | None = None) -> int:
    """`python -m models.odbc [DIRECTORY]`: write odbcinst.ini there (default: the venv's).

    Says what it wrote, and nothing when the file was already up to date.
    """
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else default_directory()
    try:
        registered, changed = _register(directory)
    except DriverNotFound as exc:
        print(f"odbc: {exc}", file=sys.stderr)  # noqa: T201 - command-line output
        return 1
    if changed:
        names = ", ".join(installed_drivers())
        print(  # noqa: T201 - command-line output
            f"odbc: registered {names} in {registered / INI_NAME}; export ODBCSYSINI={registered}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
