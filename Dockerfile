# syntax=docker/dockerfile:1
# lookup-proxy: the proxy image (also runs the demo backend and the audit exporter in
# docker-compose.yml). Secrets (LOOKUP_PROXY_JWT_SECRET, LOOKUP_PROXY_REDIS_URL, the audit and
# known-numbers keys) come from the environment at run time, never from the image. Checked by
# tests/test_compose.py.

# Build stage: wheels for the package, with the guard's hot path compiled by mypyc, and for
# every dependency. It needs a C compiler, which the runtime image does not carry.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY build_support ./build_support
COPY lookup_proxy ./lookup_proxy
# setup.py falls back to pure Python when a compile fails; the image must not.
RUN pip wheel --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; \
wheel = glob.glob('/wheels/lookup_proxy-*.whl')[0]; \
sys.exit(0 if any(n.endswith('.so') for n in zipfile.ZipFile(wheel).namelist()) \
         else 'mypyc modules missing from ' + wheel)"

# Runtime stage: the slim Python image, the wheels installed offline, no compiler, no sources.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid proxy --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin proxy \
    && mkdir -p /var/lib/lookup-proxy/locks /var/lib/lookup-proxy/audit \
    && chown -R proxy:proxy /var/lib/lookup-proxy
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels lookup-proxy
WORKDIR /app
COPY config/policy.toml ./config/policy.toml
USER 10001:10001
EXPOSE 8080
# Liveness of `serve` on its default port; docker-compose.yml sets each service's own check
# (readiness for the proxies, /healthz on 8081 for the demo backend, /metrics for the exporter).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["lookup-proxy"]
CMD ["serve", "--config", "config/policy.toml", "--host", "0.0.0.0", "--port", "8080"]
