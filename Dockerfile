# syntax=docker/dockerfile:1
#
# zantara images: three targets from one file.
#
#   docker build --target serve -t REGISTRY/zantara:0.1.0-serve .   # GPU serving (vLLM's pins)
#   docker build --target train -t REGISTRY/zantara:0.1.0-train .   # GPU training (Unsloth's pins)
#   docker build --target cpu   -t REGISTRY/zantara:0.1.0-cpu   .   # no GPU: CPU torch + baked demo model
#
#   docker run --rm -p 8000:8000 REGISTRY/zantara:0.1.0-cpu        # then curl localhost:8000/readyz
#   docker run --rm --gpus all -p 8000:8000 \
#       -e ZANTARA_BASE_MODEL=GoToCompany/llama3-8b-cpt-sahabatai-v1-instruct REGISTRY/zantara:0.1.0-serve
#
# Why two GPU targets: vLLM pins torch and transformers exactly (vllm 0.33.0: torch==2.14.0,
# transformers<5.21) and Unsloth pins them differently (transformers<=5.17, trl<=1.15), so one
# environment cannot hold both. `pip install ".[gpu]"` would try exactly that, so neither target uses
# the `gpu` extra: each installs its heavy library first, freezes what pip chose into a constraints
# file, and installs this project under it. The project's own pins are loose on purpose
# (torch>=2.4,<=2.14.1, transformers>=4.51), so the constraints only stop pip from moving torch,
# transformers and friends away from what vLLM / Unsloth were built and tested with.
#
# Why editable (-e) from /app: the demo model and the trainer read data/ and the migrations read
# migrations/versions/ beside the packages; neither is part of the wheel, so the source tree stays at
# /app (root-owned, read-only to the service) and only /app/var is writable.
#
# Every image: non-root user 10001 (numeric, so Kubernetes' runAsNonRoot can verify it), settings as
# ZANTARA_* environment variables (service/settings.py), entrypoint `zantara`.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# gpu-base: CUDA runtime + Python 3.12 virtual environment, shared by `serve` and `train`.
# The torch wheels from PyPI bring their own CUDA libraries (nvidia-* wheels); the CUDA runtime image
# adds the NVIDIA container-toolkit defaults (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES) and
# the forward-compat libraries. The host driver must support the CUDA version of torch's wheels.
# ---------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu-base

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12 (vLLM and Unsloth support 3.11 to 3.14). gcc, libc6-dev and python3-dev
# stay in the image on purpose: Triton (used by vLLM and Unsloth) compiles a small C launcher with the
# system compiler and Python.h the first time it runs a kernel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip \
    && groupadd --gid 10001 zantara \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/zantara --shell /usr/sbin/nologin zantara

# ---------------------------------------------------------------------------------------------------
# serve: vLLM (and the project on vLLM's torch/transformers) on a GPU.
# ---------------------------------------------------------------------------------------------------
FROM gpu-base AS serve

ARG VLLM_VERSION=0.33.0
# The heavy layer first, so a code change does not reinstall vLLM.
RUN pip install "vllm==${VLLM_VERSION}" \
    && pip list --format=freeze > /opt/venv/constraints.txt

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY router ./router
COPY feedback ./feedback
COPY training ./training
COPY migrations ./migrations
COPY data ./data
RUN pip install --constraint /opt/venv/constraints.txt -e /app \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var

ENV HOME=/home/zantara \
    ZANTARA_HOST=0.0.0.0 \
    ZANTARA_PORT=8000 \
    ZANTARA_VAR_DIR=/app/var \
    ZANTARA_URL=http://127.0.0.1:8000

USER 10001:10001
EXPOSE 8000
# /healthz answers as soon as the process is up (also while the model loads); readiness is /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ZANTARA_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["zantara"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------
# train: Unsloth + bitsandbytes + TRL (QLoRA) and the project's `train` extra on a GPU.
#   docker run --rm --gpus all -v $PWD/var:/app/var REGISTRY/zantara:0.1.0-train dataset build
# ---------------------------------------------------------------------------------------------------
FROM gpu-base AS train

ARG UNSLOTH_VERSION=2026.10.9
ARG BITSANDBYTES_VERSION=0.50.2
# Unsloth's own pins decide torch, transformers, trl, peft and datasets; the project's `train` extra
# (trl>=0.19, datasets>=3.0, sacrebleu) is then resolved inside them.
RUN pip install "unsloth==${UNSLOTH_VERSION}" "bitsandbytes==${BITSANDBYTES_VERSION}" "trl>=0.19" \
    && pip list --format=freeze > /opt/venv/constraints.txt

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY router ./router
COPY feedback ./feedback
COPY training ./training
COPY migrations ./migrations
COPY data ./data
RUN pip install --constraint /opt/venv/constraints.txt -e "/app[train]" \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var

ENV HOME=/home/zantara \
    ZANTARA_VAR_DIR=/app/var

USER 10001:10001
# A batch image: no server, so no port and no health check; name the command when running it.
ENTRYPOINT ["zantara"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------------
# cpu-build: CPU torch, the project, and the tiny demo base model + demo adapter built once here
# (minutes of CPU) instead of on every first start.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

ARG TORCH_CPU_VERSION=2.13.0
# torch first from the CPU index, as the Makefile does: letting pip resolve torch itself would pull
# a multi-GB CUDA build.
RUN python -m venv /opt/venv \
    && pip install --upgrade pip \
    && pip install "torch==${TORCH_CPU_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
    && pip list --format=freeze > /opt/venv/constraints.txt

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY router ./router
COPY feedback ./feedback
COPY training ./training
COPY migrations ./migrations
COPY data ./data
RUN pip install --constraint /opt/venv/constraints.txt -e /app

# BAKE_DEMO_MODEL=0 skips this; the service then builds the demo model on its first start.
ARG BAKE_DEMO_MODEL=1
RUN mkdir -p /opt/zantara/models /opt/zantara/adapters \
    && if [ "$BAKE_DEMO_MODEL" = "1" ]; then \
        ZANTARA_MODELS_DIR=/opt/zantara/models ZANTARA_ADAPTERS_DIR=/opt/zantara/adapters \
        zantara demo-model --var-dir /tmp/zantara-build && rm -rf /tmp/zantara-build; \
    fi

# ---------------------------------------------------------------------------------------------------
# cpu: `zantara serve` on the demo model, no GPU, no network (SQLite under /app/var unless
# ZANTARA_DATABASE_URL is set).
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --gid 10001 zantara \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/zantara --shell /usr/sbin/nologin zantara

# Same base image and same paths as cpu-build, so the venv's interpreter link and the editable
# install's pointers into /app stay valid.
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build /app /app
COPY --from=cpu-build --chown=10001:10001 /opt/zantara /opt/zantara
RUN mkdir -p /app/var && chown 10001:10001 /app/var

WORKDIR /app
ENV HOME=/home/zantara \
    ZANTARA_HOST=0.0.0.0 \
    ZANTARA_PORT=8000 \
    ZANTARA_VAR_DIR=/app/var \
    ZANTARA_MODELS_DIR=/opt/zantara/models \
    ZANTARA_ADAPTERS_DIR=/opt/zantara/adapters \
    ZANTARA_DEVICE=cpu \
    ZANTARA_URL=http://127.0.0.1:8000

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ZANTARA_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["zantara"]
CMD ["serve"]
