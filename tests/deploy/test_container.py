"""The container image, the compose stack and nginx's config say what Concord needs.

No Docker engine runs here, so the files are parsed and held against the code: the command
the image runs is one `concord` accepts, every environment variable they set is one Concord
(or a named other reader) actually reads, health checks hit real endpoints, and the ports,
service names and upstreams agree with each other.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn.config
import yaml
from sqlalchemy.engine import make_url

from server.cli import parser
from server.settings import Settings
from tests.deploy.container_files import (
    ROOT,
    Stage,
    compose,
    dockerfile_stages,
    interpolate,
    nginx_config,
    nginx_seconds,
)

# Variables set in the image or the stack that Concord's settings do not read, each with the
# reader that does (checked below, so that this list cannot hide a typo).
OTHER_READERS = {
    "CONCORD_WORKERS": "the image's CMD, as `concord serve --workers`",
    "FORWARDED_ALLOW_IPS": "uvicorn: peers whose X-Forwarded-* headers are trusted",
    "ODBCSYSINI": "unixODBC: where odbcinst.ini names the SQL Server driver",
    "PATH": "the shell",
    "PYTHONUNBUFFERED": "Python",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip",
    "PIP_NO_CACHE_DIR": "pip",
}


def settings_variables() -> set[str]:
    """Every environment variable server/settings.py reads."""
    return {(f.alias or name).upper() for name, f in Settings.model_fields.items()}


def runtime() -> Stage:
    return dockerfile_stages()[-1]


def test_the_image_is_multi_stage_on_slim_python_and_runs_as_a_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", stage.base), stage.base
    final = runtime()
    copies = [i.arguments for i in final.all("COPY")]
    assert any(c.startswith(f"--from={stages[0].name} /app/.venv") for c in copies), copies
    assert not any(i.keyword == "RUN" and "pip install" in i.arguments for i in final.instructions)
    user = final.all("USER")
    assert user, "the runtime stage must switch to a non-root user"
    name = user[-1].arguments.split(":")[0]
    assert name not in {"root", "0"}
    assert any("useradd" in i.arguments and name in i.arguments for i in final.all("RUN"))


def test_the_image_installs_the_pinned_mssql_extra_and_registers_the_odbc_driver() -> None:
    build = dockerfile_stages()[0]
    installs = [i.arguments for i in build.all("RUN") if "pip install" in i.arguments]
    assert any(
        "-c requirements/constraints.txt" in run and '".[mssql]"' in run for run in installs
    ), installs
    env = runtime().env()
    assert env["ODBCSYSINI"] == "/app/.venv/etc/odbc"
    runs = " ".join(i.arguments for i in runtime().all("RUN"))
    assert 'concord odbc-setup --dir "$ODBCSYSINI"' in runs
    assert "ODBC Driver 18 for SQL Server" in runs  # the build checks pyodbc sees it
    assert "unixodbc" in runs.split()  # libodbc.so.2, which pyodbc links against


def test_the_image_serves_on_its_exposed_port_with_workers_from_the_environment() -> None:
    final = runtime()
    (expose,) = final.all("EXPOSE")
    port = expose.arguments
    (cmd,) = final.all("CMD")
    shell, flag, script = cmd.exec_form()
    assert (shell, flag) == ("sh", "-c")
    assert script.startswith("exec concord serve ")  # exec: concord gets SIGTERM itself
    words = script.split()[3:]
    assert words[words.index("--port") + 1] == port
    assert words[words.index("--host") + 1] == "0.0.0.0"
    assert words[words.index("--workers") + 1] == '"${CONCORD_WORKERS}"'
    # One process by default: more need REDIS_URL, which a bare `docker run` does not have.
    assert final.env()["CONCORD_WORKERS"] == "1"
    # `concord serve` accepts every option; `--workers` comes from the fanout branch, so it
    # is held to the real parser as soon as the parser has it.
    arguments = [w.strip('"').replace("${CONCORD_WORKERS}", "2") for w in words]
    args, unknown = parser().parse_known_args(["serve", *arguments])
    assert unknown in ([], ["--workers", "2"]), unknown
    assert (args.host, args.port) == ("0.0.0.0", int(port))


def test_the_health_check_asks_healthz_on_the_served_port() -> None:
    final = runtime()
    (check,) = final.all("HEALTHCHECK")
    command = check.exec_form()
    assert command[:2] == ["python", "-c"]
    port = final.all("EXPOSE")[0].arguments
    assert f"http://127.0.0.1:{port}/healthz" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")  # the probe is valid Python
    assert re.search(r"--interval=\d+s", check.arguments)


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
            parts = path.split("/")
            hit = any(
                fnmatch.fnmatch("/".join(parts[: n + 1]), pattern)
                or (rule.lstrip("!").startswith("**/") and fnmatch.fnmatch(parts[n], pattern))
                for n in range(len(parts))
            )
            if hit:
                included = negate
        return included

    for stage in dockerfile_stages():
        for copy in stage.all("COPY"):
            if copy.arguments.startswith("--from"):
                continue
            for source in copy.arguments.split()[:-1]:
                assert sent(source.rstrip("/") + "/x.py" if (ROOT / source).is_dir() else source)
    for secret in (".env", ".venv/bin/python", ".git/config", "concord.db", "tests/conftest.py"):
        assert not sent(secret), secret
    assert not sent("server/__pycache__/app.cpython-311.pyc")


def test_other_readers_of_environment_variables_are_real() -> None:
    (cmd,) = runtime().all("CMD")
    assert "${CONCORD_WORKERS}" in cmd.arguments
    assert "FORWARDED_ALLOW_IPS" in Path(uvicorn.config.__file__).read_text()
    assert not set(OTHER_READERS) & settings_variables()


def test_every_variable_the_image_sets_is_read() -> None:
    for stage in dockerfile_stages():
        for name in stage.env():
            assert name in settings_variables() or name in OTHER_READERS, name


# ---- compose.yaml ------------------------------------------------------------------------


def services() -> dict[str, Any]:
    value = compose()["services"]
    assert isinstance(value, dict)
    return value


def concord_services() -> dict[str, Any]:
    """The services that run the image's CMD (`concord serve`), not a one-off command."""
    return {
        name: s
        for name, s in services().items()
        if s.get("image") == "concord:local" and "command" not in s
    }


def depends(service: dict[str, Any], on: str) -> str:
    condition = service["depends_on"][on]["condition"]
    assert isinstance(condition, str)
    return condition


def test_compose_runs_sql_server_2022_with_snapshot_reads_and_a_migration_job() -> None:
    stack = services()
    sqlserver = stack["sqlserver"]
    assert sqlserver["image"].startswith("mcr.microsoft.com/mssql/server:2022")
    assert sqlserver["environment"]["ACCEPT_EULA"] == "Y"
    assert "SELECT 1" in " ".join(sqlserver["healthcheck"]["test"])
    init = stack["sqlserver-init"]
    assert depends(init, "sqlserver") == "service_healthy"
    script = " ".join(init["command"])
    assert "CREATE DATABASE concord" in script
    assert "SET READ_COMMITTED_SNAPSHOT ON" in script
    migrate = stack["migrate"]
    assert migrate["command"] == ["concord", "migrate"]
    assert "migrate" in parser().parse_args(["migrate"]).command
    assert depends(migrate, "sqlserver-init") == "service_completed_successfully"


def test_compose_runs_two_concord_replicas_after_the_migration() -> None:
    replicas = concord_services()
    assert sorted(replicas) == ["concord-1", "concord-2"]
    for service in replicas.values():
        assert depends(service, "migrate") == "service_completed_successfully"
        assert depends(service, "redis") == "service_healthy"
        assert service["expose"] == [runtime().all("EXPOSE")[0].arguments]
        probe = " ".join(service["healthcheck"]["test"])
        assert "http://127.0.0.1:8000/readyz" in probe


def test_compose_environment_is_what_concord_reads_and_it_starts_with_it() -> None:
    stack = services()
    for name in [*concord_services(), "migrate"]:
        environment = {k: interpolate(str(v)) for k, v in stack[name]["environment"].items()}
        for variable in environment:
            assert variable in settings_variables() or variable in OTHER_READERS, variable
        ours = {k: v for k, v in environment.items() if k in settings_variables()}
        settings = Settings(**{k.lower(): v for k, v in ours.items()})  # validates each value
        assert not settings.embedded
        url = make_url(settings.write_url)
        assert url.drivername == "mssql+aioodbc"
        assert (url.host, url.port, url.database) == ("sqlserver", 1433, "concord")
        assert url.query["driver"] == "ODBC Driver 18 for SQL Server"
        assert url.password == interpolate(stack["sqlserver"]["environment"]["MSSQL_SA_PASSWORD"])
        assert settings.redis_url is not None
        assert make_url(settings.redis_url).host == "redis"
        assert settings.jwt_secret is not None
        assert len(settings.jwt_secret) >= 32
        if int(environment.get("CONCORD_WORKERS", "1")) > 1:
            # Several processes share events and presence only through Redis.
            assert settings.redis_url is not None


def test_compose_puts_nginx_with_the_repository_config_in_front() -> None:
    nginx = services()["nginx"]
    assert nginx["ports"] == ["8080:80"]
    source, target, _ = nginx["volumes"][0].split(":")
    assert (ROOT / source).is_file()
    assert target == "/etc/nginx/conf.d/default.conf"
    for replica in concord_services():
        assert depends(nginx, replica) == "service_healthy"
    assert "/healthz" in " ".join(nginx["healthcheck"]["test"])


# ---- nginx -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx() -> Any:
    return nginx_config(ROOT / "deploy" / "nginx" / "concord.conf")


def test_nginx_balances_over_the_compose_replicas(nginx: Any) -> None:
    upstream = nginx.block("upstream", "concord")
    servers = [args[0] for args in upstream.values("server")]
    assert servers == [f"{name}:8000" for name in sorted(concord_services())]
    server = nginx.block("server")
    assert server.value("listen")[0] == "80"


def test_nginx_passes_websocket_upgrades_and_streams_events(nginx: Any) -> None:
    mapping = nginx.block("map", "$http_upgrade", "$connection_upgrade")
    assert ("default", ["upgrade"]) in mapping.directives
    location = nginx.block("server").block("location", "/graphql")
    assert location.value("proxy_pass") == ["http://concord"]
    assert location.value("proxy_http_version") == ["1.1"]
    headers = {args[0]: args[1] for args in location.values("proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert location.value("proxy_buffering") == ["off"]  # text/event-stream flows at once
    assert nginx_seconds(location.value("proxy_read_timeout")[0]) >= 3600
    assert nginx_seconds(location.value("proxy_send_timeout")[0]) >= 3600


def test_nginx_health_route_reaches_concord_and_metrics_stay_private(nginx: Any) -> None:
    server = nginx.block("server")
    assert server.block("location", "=", "/healthz").value("proxy_pass") == ["http://concord"]
    assert server.block("location", "=", "/metrics").value("return") == ["404"]


def test_the_image_can_trust_the_rds_certificate_authorities(tmp_path: Path) -> None:
    final = runtime()
    assert any(i.arguments == 'RDS_CA_BUNDLE_URL=""' for i in final.all("ARG"))
    (run,) = [i.arguments for i in final.all("RUN") if "RDS_CA_BUNDLE_URL" in i.arguments]
    assert "update-ca-certificates" in run
    program = re.search(r'python -c "(.+?)" "\$RDS_CA_BUNDLE_URL"', run)
    assert program is not None
    # Run the build step's program on a two-certificate bundle, writing into tmp_path.
    code = program.group(1).replace("/usr/local/share/ca-certificates/", f"{tmp_path}/")
    system = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    certificates = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", system, re.S
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("\n".join(certificates[:2]) + "\n")
    result = subprocess.run(
        [sys.executable, "-c", code, bundle.as_uri()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.glob("rds-*.crt"))
    assert written == ["rds-000.crt", "rds-001.crt"]
    assert (tmp_path / "rds-001.crt").read_text() == certificates[1] + "\n"
    build = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    assert build["env"]["variables"]["RDS_CA_BUNDLE_URL"].endswith(".pem")
    assert any(
        '--build-arg RDS_CA_BUNDLE_URL="$RDS_CA_BUNDLE_URL"' in c
        for c in build["phases"]["build"]["commands"]
    )
