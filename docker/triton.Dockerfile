# syntax=docker/dockerfile:1
# Triton Inference Server for streamrec's Python-backend models (cross_encoder,
# item_encoder). Built from the repository root:
#   docker build -f docker/triton.Dockerfile -t streamrec/triton .
#
# model_repo/*/model.py imports the shared model definition from the core package
# `streamrec`, which needs Python >= 3.11, while the 24.10 image is Ubuntu 22.04
# with Python 3.10 and a Python-backend stub built for 3.10. So (as the local
# stack does, see streamrec/stack/triton.py):
#   * a Python 3.11 virtualenv holds torch, transformers, safetensors and streamrec;
#   * the backend's stub is the Python 3.11 build of the same Triton release
#     (2.51 = 24.10) that ships in the nvidia-pytriton wheel, a dependency of
#     streamrec. It is linked, not copied: its RPATH ($ORIGIN) finds the wheel's
#     bundled libraries;
#   * the stub's embedded interpreter finds the virtualenv through PATH.
# Model weights and configs are not baked in: ./model_repo is mounted at /models.

FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/streamrec \
    PATH=/opt/streamrec/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --upgrade pip

# torch as a CUDA 12.6 wheel where the index has the pinned version (the CUDA
# release of this image, so its driver requirement); otherwise PyPI's build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
WORKDIR /src
# Dependencies first (from pyproject.toml alone), so a source change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements.txt torch transformers safetensors
COPY . .
RUN pip install --no-deps . \
 && python -c "import streamrec, torch, transformers, safetensors" \
 && stub="$(python -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)')/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
 && test -x "$stub" \
 && ln -sf "$stub" /opt/tritonserver/backends/python/triton_python_backend_stub \
 && cd / && rm -rf /src
WORKDIR /opt/tritonserver
