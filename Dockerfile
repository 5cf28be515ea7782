# imgsync in a container: the daemon (`imgsync run`) by default, as a non-root user.
#
#   docker build -t imgsync .
#   docker run -d --name imgsync --restart unless-stopped --stop-timeout 15 \
#     -v imgsync-state:/state \
#     -v "$PWD/config.toml:/config/config.toml:ro" \
#     -v "$HOME/Pictures/Screenshots:/data/shots" \
#     -e GYAZO_TOKEN -p 127.0.0.1:9464:9464 imgsync
#
# /state (a volume) holds the state database; the config is read from /config/config.toml;
# folders are mounted wherever the config's paths say (e.g. /data/...). Set
# `[daemon] listen = "0.0.0.0:9464"` to publish /healthz and /metrics; HEALTHCHECK runs
# `imgsync status --check` (healthy while the daemon runs and its /healthz says so).
# `--stop-timeout` must exceed `[daemon] shutdown_grace` (8 s by default).

FROM python:3.12-slim AS build
# A local package mirror or proxy, optional: pip's own settings as build args, used by this
# stage only (the final image holds no pip settings; `docker history` of the build stage
# does, so keep passwords out of index URLs), e.g.
#   docker build --build-arg PIP_INDEX_URL=https://mirror.example/simple -t imgsync .
# PIP_CERT must be a CA bundle inside the base image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/imgsync
# the dependencies in their own layer: a change to imgsync's code does not reinstall them
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/imgsync/bin/pip install -r requirements.txt
COPY README.md ./
COPY imgsync ./imgsync
RUN /opt/imgsync/bin/pip install --no-deps .

FROM python:3.12-slim
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/imgsync \
        --shell /usr/sbin/nologin imgsync \
 && mkdir -p /state /config /work \
 && chown imgsync:imgsync /state /work \
 && chmod 0700 /state
COPY --from=build /opt/imgsync /opt/imgsync
ENV PATH=/opt/imgsync/bin:$PATH \
    IMGSYNC_CONFIG=/config/config.toml \
    IMGSYNC_STATE=/state/state.db \
    PYTHONUNBUFFERED=1
# a named volume copies this folder's owner (uid 1000); a bind mount must be owned by it
VOLUME ["/state"]
WORKDIR /work
USER 1000:1000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["imgsync", "status", "--check"]
ENTRYPOINT ["imgsync"]
CMD ["run"]
