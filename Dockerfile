# syntax=docker/dockerfile:1
#
# rnnrec image: one image, two roles. `docker run IMAGE` runs the serving worker,
# `docker run IMAGE trainer` the online trainer (ENTRYPOINT is the `rnnrec` CLI).
#
#   docker build -t rnnrec:dev .
#   docker run --rm --read-only --tmpfs /tmp -v rnnrec-data:/data \
#     -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -p 6066:6066 rnnrec:dev
#
# The trainer serves /health and /metrics on RNNREC_TRAINER_METRICS_PORT (6067), not
# on the worker's 6066: publish that port with `-p 6067:6067 rnnrec:dev trainer`.
#
# Two stages: the builder makes a virtual environment at /opt/venv, the runtime copies
# only that venv, so no pip cache, build tools or source tree end up in the image.
# Both stages use the same base image, because a venv's interpreter link and shebangs
# point at /usr/local/bin/python3.11 and must find the same Python there.

# Debian bookworm, the same Debian release and glibc as the development and CI
# machines, so the tested wheels are the shipped wheels. The tag is written once,
# here; bump it deliberately (a release pipeline may pin the digest as well:
# `python:3.11.14-slim-bookworm@sha256:...`).
FROM python:3.11.14-slim-bookworm AS python-base

FROM python-base AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Build tooling pinned here; build isolation is turned off below so the project's
# build backend is exactly this setuptools, not whatever PyPI serves on build day.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install pip==26.3 setuptools==84.2.1 wheel==0.48.0
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer: it is rebuilt only when the dependency list or the
# pins change, not on every source edit. The list comes from pyproject.toml itself so
# it is never kept twice. --only-binary: every pinned dependency ships a manylinux
# wheel (checked), so the builder needs no compiler; a new dependency without a wheel
# fails here loudly instead of pulling a toolchain into the build.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --only-binary=:all: -c constraints.txt -r /tmp/requirements.txt

# The project itself (no dependency changes possible here: --no-deps). A regular,
# non-editable install, so /src is not needed at run time.
COPY README.md ./
COPY stream_app ./stream_app
COPY rnnrec_jax ./rnnrec_jax
RUN pip install --no-deps --no-build-isolation -c constraints.txt . \
 && pip check


FROM python-base AS runtime
ARG RNNREC_UID=10001
LABEL org.opencontainers.image.title="rnnrec" \
      org.opencontainers.image.description="Streaming session-based recommender: Kafka + Faust serving a JAX/Flax GRU" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric, non-root user without a login shell or home in the image; Kubernetes'
# runAsNonRoot can only verify a numeric UID. /data is the one writable place (a
# volume: a PVC or emptyDir in Kubernetes); everything else can be mounted read-only.
RUN groupadd --system --gid "${RNNREC_UID}" rnnrec \
 && useradd --system --uid "${RNNREC_UID}" --gid "${RNNREC_UID}" \
      --home-dir /data --no-create-home --shell /usr/sbin/nologin rnnrec \
 && install -d -o "${RNNREC_UID}" -g "${RNNREC_UID}" -m 0750 /data

COPY --from=builder /opt/venv /opt/venv

# HOME and the caches point into /data so a library that writes to ~ (matplotlib's
# font cache, JAX's compilation cache) works with a read-only root filesystem.
# Bytecode was compiled at install time; writing .pyc at run time would fail anyway.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    XDG_CACHE_HOME=/data/.cache \
    MPLCONFIGDIR=/data/.cache/matplotlib \
    RNNREC_CACHE_DIR=/data/.cache/rnnrec \
    RNNREC_DATA_DIR=/data/worker \
    RNNREC_WEB_BIND=0.0.0.0 \
    RNNREC_WEB_PORT=6066

WORKDIR /data
VOLUME ["/data"]
USER ${RNNREC_UID}:${RNNREC_UID}
# 6066: the worker's web views; 6067: the trainer's /health, /ready and /metrics.
EXPOSE 6066 6067

# For plain `docker run`; Kubernetes ignores it and uses the probes in deploy/.
# Python's urllib, because the slim image has no curl and adding one is attack surface.
# One image, two roles on different ports: a `trainer` argument in PID 1's command
# line (rnnrec, or docker-init with --init) means the trainer's port, else the worker's.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; trainer = b'trainer' in open('/proc/1/cmdline', 'rb').read().split(bytes(1)); port = os.environ.get('RNNREC_TRAINER_METRICS_PORT', '6067') if trainer else os.environ.get('RNNREC_WEB_PORT', '6066'); urllib.request.urlopen('http://127.0.0.1:%s/health' % port, timeout=4)"]

ENTRYPOINT ["rnnrec"]
CMD ["worker"]
