# One image for every nautilus-mesh process; docker-compose.yml picks the command.
# Two stages: the build stage installs the package and its dependencies into a virtualenv (binary wheels only:
# psycopg[binary] carries its own libpq, so the slim image needs no system PostgreSQL library); the runtime stage
# gets that virtualenv and the configs, and runs as a non-root user who owns var/.
# tests/test_image_env.py builds the same environment (fresh venv, `pip install .`, binary psycopg) and starts
# every service from it.

FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nautilus_mesh nautilus_mesh
COPY engine_server engine_server
COPY ops_server ops_server
COPY clients clients
COPY strategies strategies
RUN pip install --no-cache-dir . \
    && PSYCOPG_IMPL=binary python -c "import psycopg, ops_server.server, engine_server.server, strategies.runtime"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin nautilus
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY config config
# var/ holds journals, the SQLite store, logs and spans; named volumes mounted here inherit this ownership.
RUN mkdir -p var && chown -R nautilus:nautilus var
# PSYCOPG_IMPL=binary: fail loudly if the bundled libpq were missing rather than look for a system one.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PSYCOPG_IMPL=binary
USER nautilus
EXPOSE 50051 50052 8002 8003
