# syntax=docker/dockerfile:1
# The streamrec application image: one image, one process per container, chosen
# by the command (`collector serve`, `streams worker`, `api serve`,
# `trainer run`, `topics create`). Built from the repository root:
#   docker build -f docker/app.Dockerfile -t streamrec/app .
# EXTRA_PACKAGES adds packages beyond pyproject.toml's (the trainer: torch, transformers, safetensors).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the project and its pinned dependencies --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/streamrec \
    PATH=/opt/streamrec/bin:$PATH
# A compiler only for the rare dependency without a wheel; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src

# Packages beyond pyproject.toml's (the trainer's image adds the model stack).
ARG EXTRA_PACKAGES=""
# torch, where required, comes as a CPU wheel (a local version such as 2.15.0+cpu,
# which pip prefers over PyPI's CUDA build of the same version): no app container
# has a GPU; the scorer runs on Triton's.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# Dependencies first (from pyproject.toml alone), so a source change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements.txt $EXTRA_PACKAGES
COPY . .
RUN pip install --no-deps . && streamrec --help > /dev/null

# ---- runtime -----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/streamrec \
    PATH=/opt/streamrec/bin:$PATH
RUN groupadd --system --gid 10001 streamrec \
 && useradd --system --uid 10001 --gid streamrec --home-dir /home/streamrec --create-home streamrec
COPY --from=build /opt/streamrec /opt/streamrec
USER streamrec
WORKDIR /home/streamrec
ENTRYPOINT ["streamrec"]
CMD ["--help"]
