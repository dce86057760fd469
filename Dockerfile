# syntax=docker/dockerfile:1
# agentserve's serving image: `agentserve serve` on the bundled model repository (service/
# default_models, installed with the package), gRPC on 50051, Prometheus metrics on 9100.
#
#   docker build -t agentserve:cpu .                               # CPU (the default)
#   docker build --build-arg VARIANT=cuda -t agentserve:cuda .     # CUDA 12.8
#   docker run --rm -p 50051:50051 -p 9100:9100 agentserve:cpu
#   docker run --rm -p 50051:50051 -v "$PWD/models:/models:ro" agentserve:cpu \
#       serve --host 0.0.0.0 --port 50051 --metrics-port 9100 --model-repo /models
#
# Both variants install through deploy/install.sh, the one install script that `make` and CI
# use too. How each variant chooses its wheels:
#   cpu   python:3.11 slim. torch==2.13.0 is pinned by constraints.txt; the install takes it from
#         the PyTorch CPU index alone, where 2.13.0 exists only as the CPU build (PyPI's Linux
#         wheel is the CUDA build, gigabytes more). Everything else: PyPI under constraints.txt.
#   cuda  NVIDIA's CUDA runtime image (CUDA 12.8, cuDNN 9) with Python 3.11. The install drops
#         constraints.txt's CPU torch pin, takes torch (pyproject's range, 2.13.x) from the PyTorch
#         cu128 index alone, which holds only CUDA builds, installs the rest under the remaining
#         constraints, then swaps onnxruntime for onnxruntime-gpu at the version constraints.txt
#         pins for it. TORCH_INDEX overrides the torch index of either variant (e.g. another
#         CUDA version: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126).
#
# The stages: base-cpu / base-cuda (a Python 3.11 runtime), builder (installs into /opt/venv),
# runtime (the venv, with the package and its bundled models inside, on a fresh base; non-root).
# tests/integration/test_container.py lints this file with hadolint and runs the install and the
# exact ENTRYPOINT + CMD and HEALTHCHECK below outside a container.

ARG VARIANT=cpu

FROM python:3.11.14-slim-bookworm AS base-cpu

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS base-cuda
# Ubuntu 22.04 ships Python 3.10: Python 3.11 comes from the deadsnakes PPA.
# DL3008 (pin apt package versions) is ignored here: the PPA keeps only its latest build of each
# package (and Ubuntu's archive drops superseded security updates), so a pinned version would
# break the build as soon as it is superseded.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && apt-get purge -y --auto-remove software-properties-common gpg-agent \
    && rm -rf /var/lib/apt/lists/*

# DL3006 (tag the image explicitly) is ignored on both FROM base-${VARIANT} lines: the name is one
# of the stages above, whose FROM lines carry pinned tags.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS builder
ARG VARIANT
# The index torch comes from; empty: the variant's PyTorch index (see the top of this file).
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# What the install needs, and nothing else (.dockerignore lets in only these paths).
COPY pyproject.toml constraints.txt README.md ./
COPY deploy/install.sh deploy/install.sh
COPY agentserve agentserve
COPY trainer trainer
COPY service service
RUN case "${VARIANT}" in \
        cpu) index="https://download.pytorch.org/whl/cpu" ;; \
        cuda) index="https://download.pytorch.org/whl/cu128" ;; \
        *) echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 2 ;; \
    esac \
    && AGENTSERVE_VARIANT="${VARIANT}" AGENTSERVE_EDITABLE=0 \
        AGENTSERVE_TORCH_INDEX="${TORCH_INDEX:-${index}}" PYTHON=python3.11 \
        deploy/install.sh /opt/venv serve \
    && /opt/venv/bin/agentserve --help >/dev/null

# DL3006 ignored, as on the builder's FROM: base-${VARIANT} is a stage above, with a pinned tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="agentserve" \
      org.opencontainers.image.description="Serves trained RL policies over gRPC (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 agentserve \
    && useradd --system --uid 10001 --gid agentserve --create-home \
        --home-dir /home/agentserve --shell /usr/sbin/nologin agentserve
# The venv holds the package itself (a regular, non-editable install) with service/default_models.
COPY --from=builder /opt/venv /opt/venv
# Numeric, so that runtimes that check for non-root (runAsNonRoot) need not resolve the name.
USER 10001:10001
WORKDIR /home/agentserve
EXPOSE 50051 9100
# gRPC health (grpc.health.v1) through agentserve's own CLI: exit 0 when SERVING, 1 otherwise.
# It checks port 50051: keep it when overriding CMD, or override the HEALTHCHECK too.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["agentserve", "health", "--target", "127.0.0.1:50051", "--timeout", "4"]
ENTRYPOINT ["agentserve"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9100"]
