# syntax=docker/dockerfile:1.7
# Image of one Tributary service, chosen with the SERVICE build argument (required).
# Build from the repository root, the context every image needs (uv.lock, libs/common):
#   docker build --build-arg SERVICE=alert -t tributary/alert .
# `docker compose build` builds all five with their names and descriptions (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# uv as the lock file was written with (uv.lock revision 5 needs a recent uv)
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# -- build: a virtualenv with the locked dependencies, then the service --------------
FROM ${PYTHON_IMAGE} AS build
# One of the workspace's five services; anything else (or nothing) stops the build here,
# before any work: other workspace members (tributary-common, simulators) are packages
# uv would install too, but not services the entry point can run.
ARG SERVICE
RUN case "${SERVICE}" in \
      snapshot|gmail_fetch|traffic_sync|alert|aggregation) ;; \
      *) echo "SERVICE build argument must be one of snapshot, gmail_fetch, traffic_sync, alert, aggregation (got '${SERVICE}'): docker build --build-arg SERVICE=alert ." >&2; exit 1 ;; \
    esac
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies in their own layer: only the lock file and the workspace's manifests, so
# a source edit does not reinstall them. The layer differs per service (its dependency
# set), and each service's is cached across source edits.
# --no-dev: test support (libs/testing, tributary-testing) and test tools stay out.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/snapshot/pyproject.toml services/snapshot/
COPY services/gmail_fetch/pyproject.toml services/gmail_fetch/
COPY services/traffic_sync/pyproject.toml services/traffic_sync/
COPY services/alert/pyproject.toml services/alert/
COPY services/aggregation/pyproject.toml services/aggregation/
COPY simulators/pyproject.toml simulators/
RUN uv sync --frozen --no-dev --package "${SERVICE}" --no-install-workspace
# Then the shared library and the service itself, installed (not editable) into the venv.
COPY libs/common/src libs/common/src
COPY services/${SERVICE}/src services/${SERVICE}/src
RUN uv sync --frozen --no-dev --package "${SERVICE}" --no-editable

# -- runtime: slim Python, the virtualenv, a non-root user ---------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
# the service's pyproject.toml description (docker-compose.yml passes it; a test keeps
# the two equal); without it the label names the service
ARG DESCRIPTION="Tributary ${SERVICE} service"
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tributary-${SERVICE}" \
      org.opencontainers.image.description="${DESCRIPTION}" \
      org.opencontainers.image.source="https://github.com/tributary/tributary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="Tributary"
RUN groupadd --system --gid 10001 tributary \
    && useradd --system --uid 10001 --gid tributary --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tributary
COPY --from=build --chown=root:root /app/.venv /app/.venv
# Read-only root filesystem: no .pyc written at run time (compiled at build), and the
# only writable place is /tmp (a tmpfs / emptyDir mounted by compose or the chart).
# TRIBUTARY_SERVICE: the build argument kept for run time, where the entry point reads it.
# HTTP_HOST: all interfaces, as a container must; the service then refuses to start
# without API_TOKENS or OIDC_ISSUER (docs/security.md).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8000 \
    TRIBUTARY_SERVICE=${SERVICE}
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '8000') + '/healthz', timeout=4)"]
# `python -m <service>` with CMD's (or `docker run IMAGE ...`'s) arguments. The shell
# only expands the variable: `exec` replaces it, so python is PID 1 and gets SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"${TRIBUTARY_SERVICE:?TRIBUTARY_SERVICE is not set}\" \"$@\"", "--"]
CMD ["run"]
