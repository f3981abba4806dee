# syntax=docker/dockerfile:1
# tokenstore: a two-stage build. The first stage resolves the locked dependencies (uv.lock)
# into a virtual environment at its final path; the second has Python, that environment
# and nothing else: no uv, no pip, no compilers. It runs as an unprivileged user.
#
# PYTHON_IMAGE is any Debian-based image with python3 (3.11+) and its venv module: the
# official python:3.11-slim-bookworm, or, where no registry is reachable, a local bookworm
# root (scripts/container-smoke builds one with debootstrap and `podman import`).
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/tokenstore
# Behind a TLS-intercepting proxy, pass its CA bundle as the optional build secret
# "ca-bundle" (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`).
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet uv==0.13.9
WORKDIR /src
# Dependencies first, so that a code change does not re-resolve them.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --no-install-project --python python3
COPY app ./app
COPY migrations ./migrations
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable --python python3

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/tokenstore /opt/tokenstore
# A numeric user needs no useradd (absent from minimal Debian roots).
RUN mkdir -p /var/lib/tokenstore && chown 10001:10001 /var/lib/tokenstore
ENV PATH=/opt/tokenstore/bin:$PATH \
    HOME=/var/lib/tokenstore \
    PYTHONUNBUFFERED=1 \
    TOKENSTORE_ENV=production \
    TOKENSTORE_DATA_DIR=/var/lib/tokenstore
USER 10001:10001
WORKDIR /var/lib/tokenstore
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["tokenstore", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
