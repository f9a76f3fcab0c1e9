# syntax=docker/dockerfile:1.7
#
# Vivid Flow images, one multi-target Dockerfile (BuildKit):
#
#   api          the API server, the operator and `vividflow db upgrade` / `keys create` (no torch)
#                  docker build --target api -t vividflow-api .
#   runner       runner Jobs on GPU nodes: CUDA base, torch + diffusers; runs wan2.1 AND veo3.1
#                  docker build --target runner -t vividflow-runner .
#   runner-veo   a slim runner for veo3.1 only (no torch, no CUDA): for installs without GPUs
#                  docker build --target runner-veo -t vividflow-runner-veo .
#   runner-cpu   torch from the CPU wheel index: wan2.1 on CPU (dev clusters, CI)
#   runner-dev   runner-cpu plus a tiny random-weight Wan 2.1 model at /opt/vividflow/models/tiny-wan,
#                built offline at image build time: the kind dev loop runs real wan2.1 jobs on CPU
#
# Bases are build arguments; pin them by digest in release builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# Every image runs as uid/gid 10001 (the chart's podSecurityContext) and keeps its virtualenv in /opt/venv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The "base" CUDA flavour (CUDA runtime compat only, ~100 MB): torch's wheels bring their own CUDA
# libraries (torch 2.15 on PyPI: CUDA 13), the node's driver comes from the NVIDIA container toolkit.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG TORCH_VERSION=2.15.0
# The CPU-only wheels of the runner-cpu and runner-dev targets.
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG UID=10001

# ---------------------------------------------------------------------------------------------------
# Builders: a virtualenv in /opt/venv. Dependencies are installed from pyproject.toml alone (with an
# empty stand-in package) so that the big layer is rebuilt only when pyproject.toml changes, not on
# every code change; the project itself is the small layer on top.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./

FROM python-build AS api-build
RUN mkdir vividflow && touch vividflow/__init__.py \
    && pip install "./[api,operator]" \
    && pip uninstall --yes vividflow \
    && rm -rf vividflow build ./*.egg-info
COPY vividflow ./vividflow
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM python-build AS runner-veo-build
RUN mkdir vividflow && touch vividflow/__init__.py \
    && pip install . \
    && pip uninstall --yes vividflow \
    && rm -rf vividflow build ./*.egg-info
COPY vividflow ./vividflow
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM python-build AS runner-cpu-build
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL
RUN pip install --index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}"
RUN mkdir vividflow && touch vividflow/__init__.py \
    && pip install "./[runner]" "torch==${TORCH_VERSION}" \
    && pip uninstall --yes vividflow \
    && rm -rf vividflow build ./*.egg-info
COPY vividflow ./vividflow
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM ${CUDA_IMAGE} AS cuda-python
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM cuda-python AS runner-build
ARG TORCH_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
# torch alone first: the largest layer (CUDA libraries), kept when other dependencies change.
RUN pip install "torch==${TORCH_VERSION}"
RUN mkdir vividflow && touch vividflow/__init__.py \
    && pip install "./[runner]" "torch==${TORCH_VERSION}" \
    && pip uninstall --yes vividflow \
    && rm -rf vividflow build ./*.egg-info
COPY vividflow ./vividflow
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# ---------------------------------------------------------------------------------------------------
# Final images
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS slim-base
ARG UID
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/vivid
RUN groupadd --gid "${UID}" vivid \
    && useradd --uid "${UID}" --gid "${UID}" --home-dir /home/vivid --create-home --shell /usr/sbin/nologin vivid
WORKDIR /home/vivid

FROM slim-base AS api
# ARGs do not carry over from the stage this one is built on: declare it again.
ARG UID
COPY --from=api-build /opt/venv /opt/venv
USER ${UID}:${UID}
EXPOSE 8000
ENTRYPOINT ["vividflow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

FROM slim-base AS runner-veo
ARG UID
COPY --from=runner-veo-build /opt/venv /opt/venv
USER ${UID}:${UID}
# The operator gives the command: python -m vividflow.runner --spec-json '<spec>'.
CMD ["python", "-m", "vividflow.runner", "--help"]

FROM slim-base AS runner-cpu
ARG UID
COPY --from=runner-cpu-build /opt/venv /opt/venv
ENV HF_HOME=/home/vivid/.cache/huggingface
USER ${UID}:${UID}
CMD ["python", "-m", "vividflow.runner", "--help"]

# The tiny Wan model of the test suite (tests/fixtures/tiny_wan.py, random weights, ~400 KB), built
# offline in a throwaway stage that also has pytest (the module is a pytest plugin).
FROM runner-cpu-build AS tiny-wan-build
COPY tests/fixtures/tiny_wan.py /src/tiny_wan.py
RUN pip install "pytest>=8" \
    && python -c "import sys; from pathlib import Path; sys.path.insert(0, '/src'); \
from tiny_wan import build_tiny_wan_model; build_tiny_wan_model(Path('/opt/tiny-wan'))"

FROM runner-cpu AS runner-dev
COPY --from=tiny-wan-build /opt/tiny-wan /opt/vividflow/models/tiny-wan
ENV VIVID_WAN_MODEL=/opt/vividflow/models/tiny-wan

FROM cuda-python AS runner
ARG UID
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/vivid \
    HF_HOME=/home/vivid/.cache/huggingface
# Ubuntu 24.04 images have user "ubuntu" at uid 1000; ours is 10001 like the slim images.
RUN groupadd --gid "${UID}" vivid \
    && useradd --uid "${UID}" --gid "${UID}" --home-dir /home/vivid --create-home --shell /usr/sbin/nologin vivid
WORKDIR /home/vivid
COPY --from=runner-build /opt/venv /opt/venv
USER ${UID}:${UID}
CMD ["python", "-m", "vividflow.runner", "--help"]
