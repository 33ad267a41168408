# syntax=docker/dockerfile:1
# Person search images: `api` (the default target: ONNX Runtime on CUDA, no torch) and
# `trainer` (torch; runs `python -m training.galw`).
#
#   docker build -t person-search .
#   docker build --target trainer -t person-search-trainer .
#
# onnxruntime-gpu 1.2x/1.3x wheels are built for CUDA 12 and cuDNN 9, which this base provides;
# Ubuntu 24.04 brings Python 3.12 (the project needs >= 3.11).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --user-group app
WORKDIR /app
# Prints the core requirements plus those of the extras named on its command line, so that
# dependencies install in their own cached layer before the code is copied.
COPY <<'PY' /opt/requirements.py
import re, sys, tomllib

extras = [a for a in sys.argv[1:] if not a.startswith("-")]
excluded = {a[len("--exclude="):] for a in sys.argv[1:] if a.startswith("--exclude=")}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
for requirement in dict.fromkeys(wanted):
    if re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0] not in excluded:
        print(requirement)
PY
COPY pyproject.toml ./

# ---- trainer -----------------------------------------------------------------------------
FROM base AS trainer
# torch wheels from PyPI carry their own CUDA libraries.
RUN python /opt/requirements.py train > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY galw galw
COPY inference inference
COPY training training
RUN mkdir -p /app/models /datasets && chown -R app:app /app/models
USER app
ENV PYTHONPATH=/app
ENTRYPOINT ["python", "-m", "training.galw"]
CMD ["--help"]

# ---- api (default) -----------------------------------------------------------------------
FROM base AS api
# The CPU `onnxruntime` of the serve extra is left out: onnxruntime-gpu provides the same
# module (with the CPU provider too), and installing both lets one shadow the other.
RUN python /opt/requirements.py serve gpu --exclude=onnxruntime > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# Serving needs the torch-free packages only: nothing of training/.
COPY inference inference
COPY gallery gallery
COPY server server
COPY models models
RUN mkdir -p /app/data && chown -R app:app /app/data /app/models
USER app
ENV PYTHONPATH=/app \
    PS_HOST=0.0.0.0 \
    PS_PORT=8000 \
    PS_DATA_DIR=/app/data \
    PS_MODEL=/app/models/demo/model.onnx \
    PS_PROVIDERS=cuda,cpu
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl --fail --silent --show-error http://127.0.0.1:8000/healthz || exit 1
CMD ["python", "-m", "server"]
