"""Registering SQL Server's ODBC driver with unixODBC (models/odbc.py).

The driver tests start a fresh Python with `ODBCSYSINI` pointing at a directory that
`register_driver()` just wrote: unixODBC reads that variable once per process, and a fresh
process with nothing but the generated file is what a new machine sees. They need the unixODBC
driver manager (`scripts/install-odbc-driver` installs it): without it they skip on a laptop
and fail under CI=true, like every other missing service.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from models import odbc
from tests.services import free_port, unavailable

ROOT = Path(__file__).resolve().parents[2]


def run_python(
    code: str, odbcsysini: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"ODBCSYSINI", "ODBCINSTINI"}}
    env["ODBCSYSINI"] = str(odbcsysini)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def registered(tmp_path: Path) -> Path:
    """A fresh odbcinst.ini directory, after checking that this machine can load the driver."""
    if odbc.microsoft_library() is None:
        unavailable("mssql-python-odbc is not installed: pip install -e '.[mssql]'")
    probe = run_python("import pyodbc", tmp_path)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        unavailable(
            "pyodbc cannot load the unixODBC driver manager (libodbc.so.2): "
            f"run scripts/install-odbc-driver ({reason})"
        )
    return odbc.register_driver(tmp_path / "odbc")


def test_register_driver_names_the_packaged_library(tmp_path: Path) -> None:
    library = odbc.microsoft_library()
    if library is None:
        unavailable("mssql-python-odbc is not installed: pip install -e '.[mssql]'")
    assert library is not None

    directory = odbc.register_driver(tmp_path / "etc" / "odbc")

    assert directory == (tmp_path / "etc" / "odbc").resolve()
    ini = configparser.ConfigParser()
    ini.read(directory / "odbcinst.ini")
    driver = Path(ini[odbc.MICROSOFT_DRIVER]["Driver"])
    assert driver == library
    assert driver.is_file()
    assert f"/linux/{odbc.linux_family()}/{odbc.architecture()}/lib/" in str(driver)
    assert odbc.driver_library() == library


def test_register_driver_is_idempotent(tmp_path: Path) -> None:
    if odbc.driver_library() is None:
        unavailable("no SQL Server ODBC driver library installed")
    first = odbc.register_driver(tmp_path)
    written = (first / "odbcinst.ini").stat().st_mtime_ns
    time.sleep(0.01)
    assert odbc.register_driver(tmp_path) == first
    assert (first / "odbcinst.ini").stat().st_mtime_ns == written
    assert [p.name for p in first.iterdir()] == ["odbcinst.ini"]  # no temporary files left


def test_pyodbc_lists_the_registered_driver(registered: Path) -> None:
    result = run_python("import json, pyodbc; print(json.dumps(pyodbc.drivers()))", registered)
    assert result.returncode == 0, result.stderr
    assert odbc.MICROSOFT_DRIVER in json.loads(result.stdout)


def test_connecting_to_a_closed_port_fails_with_a_clear_error(registered: Path) -> None:
    """The driver loads, tries the port and reports a login timeout; nothing is retried."""
    port = free_port()
    code = f"""
        import asyncio, json, time
        import pyodbc
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.ext.asyncio import create_async_engine
        from models.transient import is_transient

        report = {{}}
        started = time.monotonic()
        try:
            pyodbc.connect(
                "DRIVER={{{odbc.MICROSOFT_DRIVER}}};SERVER=tcp:127.0.0.1,{port};"
                "UID=concord;PWD=secret;Encrypt=yes;TrustServerCertificate=yes",
                timeout=1,
            )
        except pyodbc.Error as exc:
            report["pyodbc"] = [type(exc).__name__, *exc.args]
        report["seconds"] = time.monotonic() - started

        async def through_sqlalchemy():
            engine = create_async_engine(
                "mssql+aioodbc://concord:secret@127.0.0.1:{port}/concord"
                "?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes&TrustServerCertificate=yes",
                connect_args={{"timeout": 1}},
            )
            try:
                async with engine.connect():
                    pass
            except DBAPIError as exc:
                report["sqlalchemy"] = [type(exc).__name__, str(exc.orig)]
                report["transient"] = is_transient(exc, "mssql")
            finally:
                await engine.dispose()

        asyncio.run(through_sqlalchemy())
        print(json.dumps(report))
    """
    result = run_python(code, registered)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    kind, sqlstate, message = report["pyodbc"]
    # The message comes from the Microsoft driver itself, so it was found and loaded; a
    # missing registration would be "[unixODBC][Driver Manager]Can't open lib …" instead.
    assert kind == "OperationalError"
    assert sqlstate in {"HYT00", "08001"}
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in message
    assert "Login timeout expired" in message or "TCP Provider" in message
    assert report["seconds"] < 10

    kind, message = report["sqlalchemy"]
    assert kind == "OperationalError"
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in message
    assert report["transient"] is False  # a timeout: never retried


def test_the_serving_engines_login_timeout_reaches_the_driver(registered: Path) -> None:
    """A server that accepts TCP and never answers: the login gives up after
    DATABASE_CONNECT_TIMEOUT_SECONDS (1 s here), not after the driver's default 15 s."""
    code = """
        import asyncio, json, socket, time
        from models.breaker import Breaker
        from models.database import DatabaseUnavailable, Timeouts, make_engine

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        breaker = Breaker("database", threshold=5, recovery_seconds=60, trial_seconds=5,
                          is_failure=lambda exc: True, unavailable=DatabaseUnavailable)
        report = {}

        async def main():
            engine = make_engine(
                f"mssql+aioodbc://concord:secret@127.0.0.1:{port}/concord"
                "?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes&TrustServerCertificate=yes",
                timeouts=Timeouts(connect=1, statement=1, pool=1),
                breaker=breaker,
            )
            started = time.monotonic()
            try:
                async with engine.connect():
                    pass
            except DatabaseUnavailable as exc:
                report["cause"] = str(exc.__cause__)
            report["seconds"] = time.monotonic() - started
            await engine.dispose()

        asyncio.run(main())
        print(json.dumps(report))
    """
    result = run_python(code, registered)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in report["cause"]
    assert "timeout" in report["cause"].lower()
    assert report["seconds"] < 8


def test_an_unregistered_driver_name_is_reported_by_the_driver_manager(tmp_path: Path) -> None:
    """Without the generated file, unixODBC says so plainly (what the fix above prevents)."""
    (tmp_path / "odbcinst.ini").write_text("")
    probe = run_python(
        """
        import pyodbc
        try:
            pyodbc.connect(
                "DRIVER={ODBC Driver 18 for SQL Server};SERVER=tcp:127.0.0.1,1", timeout=1
            )
        except pyodbc.Error as exc:
            print(exc.args[1])
        """,
        tmp_path,
    )
    if "libodbc" in probe.stderr:
        unavailable("the unixODBC driver manager (libodbc.so.2) is missing")
    assert "[unixODBC][Driver Manager]" in probe.stdout


@pytest.mark.parametrize(
    ("files", "family"),
    [
        ({"alpine-release": "3.20.0"}, "alpine"),
        ({"SUSE-brand": "SLE\nVERSION = 15"}, "suse"),
        ({"redhat-release": "Rocky Linux release 9.4"}, "rhel"),
        ({"os-release": 'ID="amzn"\nVERSION_ID="2023"'}, "rhel"),
        ({"os-release": "ID=ubuntu\nID_LIKE=debian"}, "debian_ubuntu"),
        ({"os-release": "ID=debian"}, "debian_ubuntu"),
        ({}, "debian_ubuntu"),
    ],
)
def test_linux_family_picks_the_build_mssql_python_would_load(
    tmp_path: Path, files: dict[str, str], family: str
) -> None:
    (tmp_path / "etc").mkdir()
    for name, content in files.items():
        (tmp_path / "etc" / name).write_text(content)
    assert odbc.linux_family(tmp_path) == family


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "x86_64"), ("AMD64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64")],
)
def test_architecture_names(machine: str, expected: str) -> None:
    assert odbc.architecture(machine) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the packaged driver is Linux's")
def test_microsoft_library_takes_this_platform_and_the_newest_build(tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    here = libs / "linux" / "rhel" / odbc.architecture() / "lib"
    other = libs / "linux" / "debian_ubuntu" / odbc.architecture() / "lib"
    for directory, name in [
        (here, "libmsodbcsql-18.5.so.1.1"),
        (here, "libmsodbcsql-18.10.so.1.1"),
        (here, "libodbcinst.so.2"),
        (other, "libmsodbcsql-18.99.so.1.1"),
    ]:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "redhat-release").write_text("Red Hat Enterprise Linux release 9.4")

    assert odbc.microsoft_library(libs, root) == here / "libmsodbcsql-18.10.so.1.1"
    assert odbc.microsoft_library(tmp_path / "missing", root) is None


def test_freetds_is_registered_when_no_microsoft_driver_is_there(tmp_path: Path) -> None:
    library = tmp_path / "usr" / "lib" / odbc.multiarch() / "odbc" / "libtdsodbc.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"")

    drivers = odbc.installed_drivers(libs=tmp_path / "no-package", root=tmp_path)

    assert drivers == {odbc.FREETDS_DRIVER: library}
    ini = configparser.ConfigParser()
    ini.read_string(odbc.odbcinst_ini(drivers))
    assert ini.sections() == [odbc.FREETDS_DRIVER]
    assert ini[odbc.FREETDS_DRIVER]["Driver"] == str(library)


def test_install_script_is_quiet_when_everything_is_in_place(registered: Path) -> None:
    script = ROOT / "scripts" / "install-odbc-driver"
    env = {**os.environ, "PYTHON": sys.executable}
    first = subprocess.run(
        [script, str(registered)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr
    # The fixture already wrote the same file: nothing to do, nothing to say.
    assert first.stdout == ""
    assert first.stderr == ""


def test_the_driver_runs_on_the_engines_own_threads(registered: Path) -> None:
    """aioodbc runs pyodbc's calls on the engine's executor, never on asyncio's default pool."""
    port = free_port()
    code = f"""
        import asyncio, json, threading
        from sqlalchemy import event
        from sqlalchemy.exc import DBAPIError
        from models.database import make_engine

        report = {{}}

        async def attempt():
            engine = make_engine(
                "mssql+aioodbc://concord:secret@127.0.0.1:{port}/concord"
                "?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes&TrustServerCertificate=yes"
            )

            @event.listens_for(engine.sync_engine, "do_connect")
            def short_login(dialect, record, cargs, cparams):
                cparams["timeout"] = 1  # nothing listens: fail fast

            try:
                async with engine.connect():
                    pass
            except DBAPIError as exc:
                report["error"] = str(exc.orig)
            finally:
                await engine.dispose()
            report["default_executor_used"] = (
                asyncio.get_running_loop()._default_executor is not None
            )
            report["threads"] = sorted(t.name for t in threading.enumerate())

        asyncio.run(attempt())
        print(json.dumps(report))
    """
    result = run_python(code, registered)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in report["error"]
    assert report["default_executor_used"] is False
    assert any(name.startswith("concord-odbc") for name in report["threads"]), report
