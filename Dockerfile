# The gateway's image; `local-engine` runs from the same image (compose.yaml overrides the command).
#
#   docker build -t llm-gateway .                          # CPU torch (the gateway, local-engine on CPU)
#   docker build -t llm-gateway:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # local-engine on a GPU
#
# Two stages: the build stage makes a virtual environment, the runtime stage copies only it, so
# no compiler or pip cache ships. The runtime runs as an unprivileged user; /data (the embedded
# stores and the model caches: GATEWAY_DATA_DIR) is a volume so that models are fetched or
# converted once, not at every start.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# Extras of the project to install, e.g. "[engine]" when pyproject.toml declares one.
ARG PIP_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from its own index: the CPU wheel is a fraction of the CUDA one. Its own layer,
# so that a change to the code does not download it again.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY local_engine ./local_engine
RUN pip install ".${PIP_EXTRAS}"

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin gateway \
    && mkdir -p /data /policies \
    && chown gateway:gateway /data
COPY --from=build /opt/venv /opt/venv
# The bundled policies; compose mounts ./policies over them so that edits reload live.
COPY policies /policies
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_DATA_DIR=/data \
    GATEWAY_POLICY=/policies/default.yaml \
    HF_HOME=/data/huggingface
VOLUME ["/data"]
USER gateway
WORKDIR /home/gateway
EXPOSE 8080 8001
# /readyz answers 200 once the policy is loaded (and says "degraded" when a store is down).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
# No --allow-open here: with a policy that has no tenants the gateway refuses to listen on
# 0.0.0.0. Mount a policy with tenants (GATEWAY_POLICY), or pass --allow-open knowingly.
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
