# syntax=docker/dockerfile:1
# Concord's production image: build the virtualenv in one stage, run it in another.
#
#   docker build -t concord .
#   docker run -p 8000:8000 -e DATABASE_URL=… -e JWT_SECRET=… -e REDIS_URL=… -e CONCORD_WORKERS=4 concord
#
# CONCORD_WORKERS (default 1) is the number of API processes; more than one needs REDIS_URL,
# through which the processes share events and presence.
#
# The image holds the `mssql` extra (pyodbc, aioodbc, mssql-python with Microsoft ODBC
# Driver 18) and registers that driver with unixODBC at build time, as the README's
# "Running on SQL Server" asks: ODBCSYSINI points at the generated odbcinst.ini.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the pinned dependencies into /app/.venv -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /app/.venv
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY schema schema
COPY resolvers resolvers
COPY models models
COPY subscriptions subscriptions
COPY auth auth
COPY server server
COPY telemetry telemetry
RUN /app/.venv/bin/pip install --upgrade "pip>=24" \
 && /app/.venv/bin/pip install -c requirements/constraints.txt ".[mssql]"

# ---- runtime: the virtualenv, unixODBC and an unprivileged user ---------------------------
FROM ${PYTHON_IMAGE} AS runtime
# unixODBC is the driver manager pyodbc links against (libodbc.so.2); Microsoft's driver
# library needs Kerberos' GSSAPI library at load time even when Kerberos is not used.
RUN apt-get update \
 && apt-get install -y --no-install-recommends unixodbc libgssapi-krb5-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Amazon RDS's certificate authorities, so that `Encrypt=yes;TrustServerCertificate=no` can
# verify the server (the pipeline passes the bundle's URL; a local build may leave it empty).
ARG RDS_CA_BUNDLE_URL=""
RUN if [ -n "$RDS_CA_BUNDLE_URL" ]; then \
      python -c "import re, sys, urllib.request; pem = urllib.request.urlopen(sys.argv[1], timeout=60).read().decode(); certs = re.findall(r'-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----', pem, re.S); assert certs, 'no certificates in the bundle'; [open(f'/usr/local/share/ca-certificates/rds-{i:03d}.crt', 'w').write(c + chr(10)) for i, c in enumerate(certs)]" "$RDS_CA_BUNDLE_URL" \
   && update-ca-certificates; \
    fi
RUN groupadd --system --gid 10001 concord \
 && useradd --system --uid 10001 --gid concord --home-dir /app --shell /usr/sbin/nologin concord
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ODBCSYSINI=/app/.venv/etc/odbc \
    CONCORD_DATA_DIR=/app/data \
    CONCORD_WORKERS=1
# Register ODBC Driver 18 (the library inside mssql-python-odbc) in $ODBCSYSINI/odbcinst.ini,
# then check that pyodbc sees it, so that a broken driver fails the build, not the first query.
RUN concord odbc-setup --dir "$ODBCSYSINI" \
 && python -c "import pyodbc, sys; sys.exit('ODBC Driver 18 for SQL Server' not in pyodbc.drivers())" \
 && mkdir -p /app/data && chown concord:concord /app/data
WORKDIR /app
USER concord:concord
EXPOSE 8000
# /healthz answers while the process is alive; /readyz (database and broker) is for the
# load balancer. The slim image has no curl: Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# A shell expands CONCORD_WORKERS; `exec` replaces the shell, so concord runs as PID 1 and
# receives SIGTERM from `docker stop` or ECS itself and drains its connections.
CMD ["sh", "-c", "exec concord serve --host 0.0.0.0 --port 8000 --workers \"${CONCORD_WORKERS}\""]
