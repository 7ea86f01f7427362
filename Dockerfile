# ModelPilot operator image: `modelpilot run` (operator), `modelpilot monitor` (drift monitor) and
# `modelpilot fetch-model` (the model-fetch init container, via MODELPILOT_IMAGE).
#
# Not built in this repository's CI: the CI machines have no Docker. Build it with
#   docker build -t ghcr.io/modelpilot/modelpilot:0.1.0 .
# or through `skaffold dev` (skaffold.yaml). The base is pinned to an exact patch tag; for
# reproducible release builds pin its digest too (docker buildx imagetools inspect <tag>).
ARG PYTHON_IMAGE=python:3.11.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# A virtualenv is one directory to copy into the runtime stage, without pip's build leftovers.
RUN python -m venv /opt/modelpilot
ENV PATH=/opt/modelpilot/bin:$PATH
WORKDIR /src
# Only what the package needs (see .dockerignore): tests, e2e and charts stay out of the image.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . \
 && find /opt/modelpilot -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelpilot" \
      org.opencontainers.image.description="Kubernetes operator for progressive delivery of NVIDIA Triton models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/modelpilot/modelpilot"
# The same uid/gid as the chart's securityContext (restricted pod security: runAsNonRoot).
RUN groupadd --system --gid 65532 modelpilot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin modelpilot
COPY --from=build /opt/modelpilot /opt/modelpilot
ENV PATH=/opt/modelpilot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The chart mounts an emptyDir at /tmp; the root filesystem stays read-only.
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 8081 8090
ENTRYPOINT ["modelpilot"]
CMD ["run"]
