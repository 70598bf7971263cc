# The code location of eval_pipeline: serves the Dagster definitions over gRPC, and is the image each run container
# is started from (DockerRunLauncher / K8sRunLauncher). The webserver and daemon of deploy/docker-compose.yaml use
# the same image with another entrypoint. See docs/deployment.md.
#
#   docker build -t eval-pipeline-code .
#   docker run --rm -p 127.0.0.1:4000:4000 -e EVAL_LAKE_ROOT=s3://bucket/lake ... eval-pipeline-code
#
# The server listens on 0.0.0.0 *inside* the container (so other containers can reach it); publish the port on the
# host's loopback only (-p 127.0.0.1:4000:4000, as the compose file does): a bare -p 4000:4000 would open it to
# every network the host is on, and a code server runs whatever a launched run asks of it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_DISABLE_TELEMETRY=1 \
    GX_ANALYTICS_ENABLED=False \
    EVAL_LAKE_ROOT=/lake

WORKDIR /opt/dagster/app

# Dependencies first (a layer that changes only when the pins do), with the same pins as every other install.
COPY pyproject.toml constraints.txt README.md ./
COPY eval_pipeline ./eval_pipeline
COPY assets ./assets
COPY resources ./resources
RUN pip install -c constraints.txt ".[deploy]"

COPY deploy ./deploy
RUN useradd --system --uid 10001 --home-dir /opt/dagster dagster \
 && mkdir -p "$DAGSTER_HOME" /lake \
 && cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
 && chown -R dagster "$DAGSTER_HOME" /lake
USER dagster

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "eval_pipeline.definitions", "-a", "defs"]
