# Runtime image of the enrichment dataflow.
#
#   docker build -t stream-enrich:0.1.0 .
#   docker run --rm stream-enrich:0.1.0               # the demo; extra args go to bytewax.run
#
# Dependencies come pinned from constraints.txt (how to regenerate it: k8s/README.md).
# Every pinned package ships a manylinux wheel for CPython 3.12 on glibc <= 2.36
# (bytewax needs glibc 2.31, cryptography 2.34), so nothing is compiled here.
# The same image serves k8s/ (`python -m dataflows.cluster`) and Bytewax's Helm
# chart under waxctl, which runs ./entrypoint.sh and ./entrypoint-recovery.sh
# from the working directory with the venv at /venv.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY commands/ commands/
COPY config/ config/
COPY dataflows/ dataflows/
COPY operators/ operators/
COPY recovery_store/ recovery_store/
COPY reference/ reference/
COPY sinks/ sinks/
COPY sources/ sources/
COPY telemetry/ telemetry/
RUN /venv/bin/pip install --constraint constraints.txt . \
    && /venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 65532 enrich \
    && useradd --system --uid 65532 --gid enrich --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin enrich
COPY --from=build /venv /venv
WORKDIR /app
COPY k8s/image/entrypoint.sh k8s/image/entrypoint-recovery.sh ./
# Writable for `docker run` (demo-output/); Kubernetes mounts volumes for its paths.
RUN chown enrich:enrich /app
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
# 9999: Bytewax peers; 3030: Bytewax API server with /metrics.
EXPOSE 9999 3030
# On an interrupt Bytewax stops its workers and the run summary is printed; Python
# ignores SIGTERM as PID 1, so Kubernetes would wait out the grace period and kill it.
STOPSIGNAL SIGINT
ENTRYPOINT ["python", "-m", "bytewax.run", "dataflows.enrich"]
