# One image for every nautilus-mesh process; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nautilus_mesh nautilus_mesh
COPY engine_server engine_server
COPY ops_server ops_server
COPY clients clients
COPY strategies strategies
COPY config config
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
