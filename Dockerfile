# imgsync in a container: state in /state, config in /config, folders mounted as needed.
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imgsync ./imgsync
RUN pip install --no-cache-dir . && rm -rf /src
ENV IMGSYNC_CONFIG=/config/config.toml \
    IMGSYNC_STATE=/state/state.db
VOLUME ["/state", "/config"]
USER 1000:1000
ENTRYPOINT ["imgsync"]
CMD ["run"]
