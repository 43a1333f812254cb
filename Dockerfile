# syntax=docker/dockerfile:1
# Minimal image for now; the hardened multi-stage build and manifests live in deploy/.
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY stream_app ./stream_app
COPY rnnrec_jax ./rnnrec_jax
RUN pip install -c constraints.txt . && useradd --uid 10001 --create-home rnnrec
USER 10001
ENTRYPOINT ["rnnrec"]
CMD ["--help"]
