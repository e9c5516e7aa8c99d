# syntax=docker/dockerfile:1
# One image for both processes of the gateway:
#   API (default):  uvicorn app.main:app --host 0.0.0.0 --port 8000
#   worker:         arq worker.main.WorkerSettings
#
# The base image is pinned by tag and digest. To move to a newer one, look its digest up with
# `docker buildx imagetools inspect python:<tag>` and change both.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie@sha256:193fdd0bbcb3d2ae612bd6cc3548d2f7c78d65b549fcaa8af75624c47474444d

# -- builder: a virtualenv with exactly the locked runtime dependencies -----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The lock alone first: this layer is rebuilt only when the dependencies change, never for a
# code change. Wheels only (no compiler anywhere), each checked against the lock's hashes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# -- runtime: the virtualenv and the code; no compilers, no pip cache, not root ---------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The code last (it changes most often); it runs from /app (PYTHONPATH), uninstalled.
COPY app ./app
COPY worker ./worker
# Numeric, so that a runtime that refuses root (runAsNonRoot) can check it without /etc/passwd.
USER 10001:10001
EXPOSE 8000
# The API's liveness; the worker service overrides it (see docker-compose.yml). No curl in
# slim images, so Python asks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
