# syntax=docker/dockerfile:1.7
# Demo profile only: fake Outline servers, fake Gmail API + OAuth, and the demo's
# register/generate scripts (mounted from deploy/compose/demo). The workspace root's
# dependencies are installed (the five services and the simulators), so the services'
# command lines are available too; its dev group (tributary-testing, pytest) is not.
#   docker build -f deploy/docker/simulators.Dockerfile -t tributary/simulators .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/snapshot/pyproject.toml services/snapshot/
COPY services/gmail_fetch/pyproject.toml services/gmail_fetch/
COPY services/traffic_sync/pyproject.toml services/traffic_sync/
COPY services/alert/pyproject.toml services/alert/
COPY services/aggregation/pyproject.toml services/aggregation/
COPY simulators/pyproject.toml simulators/
RUN uv sync --frozen --no-dev --no-install-workspace
COPY libs/common/src libs/common/src
COPY services/snapshot/src services/snapshot/src
COPY services/gmail_fetch/src services/gmail_fetch/src
COPY services/traffic_sync/src services/traffic_sync/src
COPY services/alert/src services/alert/src
COPY services/aggregation/src services/aggregation/src
COPY simulators/src simulators/src
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tributary-simulators" \
      org.opencontainers.image.description="Fake Outline servers, fake Gmail + OAuth and load generators (demo only)" \
      org.opencontainers.image.source="https://github.com/tributary/tributary" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 tributary \
    && useradd --system --uid 10001 --gid tributary --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tributary \
    && mkdir /demo && chown 10001:10001 /demo
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
HEALTHCHECK NONE
CMD ["python", "-m", "simulators.outline", "--help"]
