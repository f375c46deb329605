# fr-exporter image: the exporter, the AI sidecar and the simulator (`fr-exporter simulate`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install . \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/fr-exporter --create-home fr \
    && mkdir -p /var/lib/fr-exporter/var /etc/fr-exporter \
    && chown -R fr:fr /var/lib/fr-exporter \
    && rm -rf /src

USER fr
WORKDIR /var/lib/fr-exporter
EXPOSE 9466 9467
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9466/healthz', timeout=3)"]
ENTRYPOINT ["fr-exporter"]
CMD ["--config", "/etc/fr-exporter/live.yaml"]
