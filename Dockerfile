# syntax=docker/dockerfile:1
# One image for both processes of the gateway:
#   API (default):  uvicorn app.main:app --host 0.0.0.0 --port 8000
#   worker:         arq worker.main.WorkerSettings
ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: a virtualenv with the gateway and exactly the locked dependency versions --------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY app ./app
COPY worker ./worker
RUN pip install --no-cache-dir -c requirements.lock . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# -- runtime: the virtualenv only; no compilers, no pip cache, not root ----------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER gateway
EXPOSE 8000
# The API's liveness; the worker service overrides it (see docker-compose.yml). No curl in
# slim images, so Python asks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
