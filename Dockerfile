# lookup-proxy: the proxy image. Secrets (LOOKUP_PROXY_JWT_SECRET, LOOKUP_PROXY_REDIS_URL, ...)
# come from the environment at run time, never from the image.

# Build stage: a wheel with the guard's hot path compiled by mypyc (needs a C compiler, which
# the runtime image does not carry).
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY build_support ./build_support
COPY lookup_proxy ./lookup_proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 proxy \
    && mkdir -p /var/lib/lookup-proxy/locks /var/lib/lookup-proxy/audit \
    && chown -R proxy /var/lib/lookup-proxy
COPY config ./config
USER proxy
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=1)" || exit 1
ENTRYPOINT ["lookup-proxy"]
CMD ["serve", "--config", "config/policy.toml", "--host", "0.0.0.0", "--port", "8080"]
