# quipfeed itself: multi-stage, non-root, CPU torch by default.
# Build: docker build -t quipfeed .   (GPU torch: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128)
FROM python:3.11-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/quipfeed
ENV PATH=/opt/quipfeed/bin:$PATH
# torch first, from the CPU index, so nothing below pulls a multi-GB CUDA build.
RUN pip install --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY quipfeed ./quipfeed
COPY ingest ./ingest
COPY retrieval ./retrieval
COPY inference ./inference
COPY bot ./bot
COPY bench ./bench
RUN pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 quipfeed
COPY --from=build /opt/quipfeed /opt/quipfeed
ENV PATH=/opt/quipfeed/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    QUIPFEED_DATA_DIR=/data
RUN mkdir -p /data && chown quipfeed /data
USER quipfeed
VOLUME ["/data"]
EXPOSE 8080 8765 30000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
  CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
      "http://127.0.0.1:${QUIPFEED_HEALTH_PORT:-8765}/healthz" || exit 1
ENTRYPOINT ["quipfeed"]
CMD ["--help"]
