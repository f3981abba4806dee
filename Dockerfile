# syntax=docker/dockerfile:1
# tokenstore: a two-stage build. The first stage resolves the locked dependencies (uv.lock)
# into a virtual environment at its final path; the second has Python, that environment
# and nothing else: no uv, no pip cache, no compilers. It runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/tokenstore
RUN python -m pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first, so that a code change does not re-resolve them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
RUN uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/tokenstore tokenstore
COPY --from=build /opt/tokenstore /opt/tokenstore
ENV PATH=/opt/tokenstore/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOKENSTORE_ENV=production \
    TOKENSTORE_DATA_DIR=/var/lib/tokenstore
USER tokenstore
WORKDIR /var/lib/tokenstore
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["tokenstore", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
