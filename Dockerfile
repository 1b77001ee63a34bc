# syntax=docker/dockerfile:1
#
# zantara images: one file, five targets (and the `wheel` stage they all install).
#
#   docker build --target gpu-serve -t REGISTRY/zantara:0.1.0-gpu-serve .  # GPU engine tier (vLLM in process)
#   docker build --target gpu-train -t REGISTRY/zantara:0.1.0-gpu-train .  # weekly retrain (Unsloth QLoRA)
#   docker build --target cpu       -t REGISTRY/zantara:0.1.0-cpu       .  # CPU router tier (engine openai)
#   docker build --target migrate   -t REGISTRY/zantara:0.1.0-migrate   .  # `zantara db upgrade` (Helm hook)
#   docker build --target cpu-demo  -t REGISTRY/zantara:0.1.0-cpu-demo  .  # no GPU: tiny demo model baked in
#
#   docker run --rm -p 8000:8000 REGISTRY/zantara:0.1.0-cpu-demo          # then curl localhost:8000/readyz
#   docker run --rm --gpus all -p 8000:8000 -e ZANTARA_ENGINE=vllm \
#       -e ZANTARA_BASE_MODEL=GoToCompany/llama3-8b-cpt-sahabatai-v1-instruct REGISTRY/zantara:0.1.0-gpu-serve
#
# vLLM range: the `vllm` engine is written for vLLM >= 0.31, < 0.34 (AsyncLLM.from_engine_args,
# LoRARequest(lora_name, lora_int_id, lora_path), add_lora / remove_lora); the serving image is vLLM's
# own official image at one pinned tag of that range, so torch, CUDA and the kernels are the ones vLLM
# was built and tested with.
#
# Why two GPU images: vLLM pins torch and transformers exactly and Unsloth pins them differently, so
# one environment cannot hold both. Each GPU target freezes what its heavy library brought into a
# constraints file and installs this project under it: the project's own pins are loose on purpose
# (pyproject.toml), so the constraints only stop pip from moving torch and friends.
#
# Why a wheel: every image installs the project's wheel, built once in the `wheel` stage, never the
# source tree: the review pages' templates and static files, the project's data (knowledge/data/) and
# the migrations are package data inside it (pyproject.toml), found beside the installed modules, so no
# image carries a source folder and /app holds only the writable /app/var (tests/deploy/test_wheel.py
# serves an installed wheel from outside the checkout).
#
# Every image: non-root user 10001 (numeric, so Kubernetes' runAsNonRoot can verify it), settings as
# ZANTARA_* environment variables (service/settings.py) given at run time (no secret is baked in),
# entrypoint `zantara`.

ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# wheel: the project as one wheel in /wheels (code and package data); the targets below install it.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY zantara ./zantara
COPY service ./service
COPY router ./router
COPY feedback ./feedback
COPY database ./database
COPY knowledge ./knowledge
COPY training ./training
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------------------------------------------
# gpu-serve: vLLM's official image (Python, torch, CUDA and vLLM as vLLM ships them) + this project.
# ---------------------------------------------------------------------------------------------------
FROM ${VLLM_IMAGE} AS gpu-serve

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# vLLM's image installs into the system Python; keep everything it brought where it is. The wheel is
# mounted from its stage for the install only (no layer keeps it).
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 -m pip list --format=freeze > /tmp/vllm-constraints.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install \
        --constraint /tmp/vllm-constraints.txt /wheels/zantara-*.whl \
    && rm /tmp/vllm-constraints.txt \
    && groupadd --gid 10001 zantara \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/zantara --shell /usr/sbin/nologin zantara \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var

ENV HOME=/home/zantara \
    ZANTARA_HOST=0.0.0.0 \
    ZANTARA_PORT=8000 \
    ZANTARA_VAR_DIR=/app/var \
    ZANTARA_ENGINE=vllm \
    ZANTARA_URL=http://127.0.0.1:8000

USER 10001:10001
EXPOSE 8000
# /healthz answers while the process and its engine live (also while the model loads); readiness is /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ZANTARA_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["zantara"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------
# gpu-train: pinned CUDA + cuDNN base, Unsloth (whose pins decide torch, transformers, trl, peft) and
# the project's `train` extra. Runs `zantara retrain` from the Helm chart's CronJob.
# ---------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu-train

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# gcc, libc6-dev and python3-dev stay: Triton compiles a small C launcher the first time it runs a kernel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip \
    && groupadd --gid 10001 zantara \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/zantara --shell /usr/sbin/nologin zantara

ARG UNSLOTH_VERSION=2026.10.9
ARG BITSANDBYTES_VERSION=0.50.2
RUN pip install "unsloth==${UNSLOTH_VERSION}" "bitsandbytes==${BITSANDBYTES_VERSION}" "trl>=1.14,<1.17" \
    && pip list --format=freeze > /opt/venv/constraints.txt

WORKDIR /app
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --constraint /opt/venv/constraints.txt "$(ls /wheels/zantara-*.whl)[train]" \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var

ENV HOME=/home/zantara \
    ZANTARA_VAR_DIR=/app/var

USER 10001:10001
# A batch image: no server, so no port; the health check is off on purpose.
HEALTHCHECK NONE
ENTRYPOINT ["zantara"]
CMD ["retrain"]

# ---------------------------------------------------------------------------------------------------
# cpu-build: CPU torch (from the CPU index: pip's own choice would pull a multi-GB CUDA build) and the
# project's wheel, in a virtual environment copied whole into the runtime stages below.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

ARG TORCH_CPU_VERSION=2.13.0
RUN python -m venv /opt/venv \
    && pip install --upgrade pip \
    && pip install "torch==${TORCH_CPU_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
    && pip list --format=freeze > /opt/venv/constraints.txt

RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --constraint /opt/venv/constraints.txt /wheels/zantara-*.whl

# ---------------------------------------------------------------------------------------------------
# cpu: the router tier, `zantara serve` with ZANTARA_ENGINE=openai in front of the GPU engine pods
# (routing, interaction log, ratings, review pages, guardrails). No model inside.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --gid 10001 zantara \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/zantara --shell /usr/sbin/nologin zantara

# Same base image and same path as cpu-build, so the venv's interpreter link stays valid; the project
# is inside the venv (installed from the wheel), so nothing else is copied.
COPY --from=cpu-build /opt/venv /opt/venv
RUN mkdir -p /app/var && chown 10001:10001 /app/var

WORKDIR /app
ENV HOME=/home/zantara \
    ZANTARA_HOST=0.0.0.0 \
    ZANTARA_PORT=8000 \
    ZANTARA_VAR_DIR=/app/var \
    ZANTARA_ENGINE=openai \
    ZANTARA_DEVICE=cpu \
    ZANTARA_URL=http://127.0.0.1:8000

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ZANTARA_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["zantara"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------
# migrate: the cpu image running `zantara db upgrade` once (the chart's pre-install/pre-upgrade Job):
# a small pull next to the GPU images, and no server, so no health check.
# ---------------------------------------------------------------------------------------------------
FROM cpu AS migrate

HEALTHCHECK NONE
CMD ["db", "upgrade"]

# ---------------------------------------------------------------------------------------------------
# cpu-demo: the whole service on a CPU with the tiny demo base model and demo adapter built once here
# (minutes of CPU) instead of on every first start; no GPU, no network.
# ---------------------------------------------------------------------------------------------------
FROM cpu-build AS cpu-demo-build

RUN mkdir -p /opt/zantara/models /opt/zantara/adapters \
    && ZANTARA_MODELS_DIR=/opt/zantara/models ZANTARA_ADAPTERS_DIR=/opt/zantara/adapters \
        zantara demo-model --var-dir /tmp/zantara-build \
    && rm -rf /tmp/zantara-build

FROM cpu AS cpu-demo

COPY --from=cpu-demo-build --chown=10001:10001 /opt/zantara /opt/zantara
ENV ZANTARA_ENGINE=hf \
    ZANTARA_MODELS_DIR=/opt/zantara/models \
    ZANTARA_ADAPTERS_DIR=/opt/zantara/adapters
