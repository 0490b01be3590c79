# One image for every service: celery workers, Flower, the metrics exporter, the producer CLI and
# the Replicate stand-in. Secrets never enter the image: .env is excluded by .dockerignore and
# every credential arrives as an environment variable at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so volume ownership is predictable (bind-mount an output directory owned by
# 10001, or run with --user to match the host).
RUN groupadd --system --gid 10001 fleet \
 && useradd --system --uid 10001 --gid fleet --home-dir /app --no-create-home --shell /usr/sbin/nologin fleet

WORKDIR /app

# Dependencies first (cached while only the code changes): install the project's requirements
# from pyproject.toml with an empty package, then the real code.
COPY pyproject.toml README.md ./
RUN mkdir -p shared workers producer replicate_sim \
 && pip install '.[s3,gcs,azure]' \
 && pip uninstall -y replicate-fleet

COPY shared ./shared
COPY workers ./workers
COPY producer ./producer
COPY replicate_sim ./replicate_sim
RUN pip install --no-deps . \
 && mkdir -p /data/output /data/flower /input \
 && chown -R fleet:fleet /data /input

USER fleet

ENV OUTPUT_DIR=/data/output
EXPOSE 5555 8787 9808
VOLUME ["/data/output"]

# docker-compose.yml sets each service's command; this default runs a worker.
CMD ["celery", "-A", "workers", "worker", "--task-events", "--hostname=worker@%h"]
