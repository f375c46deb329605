# fr-exporter image: the exporter, the AI sidecar and the simulator (`fr-exporter simulate`).
# The same package as `python -m build` makes: the wheel is built in the first stage and installed
# in the second, so the image runs exactly what a pip install of the release runs.
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) -t fr-exporter .
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN pip install "build>=1.2" && python -m build --wheel --outdir /dist

FROM python:3.11-slim

# fr_build_info{revision=...}: there is no git checkout inside the image
ARG REVISION=unknown
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FR_BUILD_REVISION=${REVISION}

COPY --from=build /dist/ /tmp/dist/
RUN pip install /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/fr-exporter --create-home fr \
    && mkdir -p /var/lib/fr-exporter/var /etc/fr-exporter \
    && chown -R fr:fr /var/lib/fr-exporter

USER fr
WORKDIR /var/lib/fr-exporter
EXPOSE 9466 9467
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9466/healthz', timeout=3)"]
ENTRYPOINT ["fr-exporter"]
CMD ["--config", "/etc/fr-exporter/live.yaml"]
