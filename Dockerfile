# codegend daemon image. Build: docker build -t codegend .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# the locked dependencies first (their own layer: rebuilt only when the lock changes), checked
# against the lock's hashes; setuptools, the build backend, comes from the lock too
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY config ./config
COPY examples ./examples
COPY schemas ./schemas
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && useradd --create-home --uid 10001 codegend \
    && mkdir -p /data /out && chown codegend /data /out

USER codegend
ENV CODEGEND_STORE__PATH=/data/codegend.db CODEGEND_OUTPUT__DIR=/out
VOLUME ["/data", "/out"]
ENTRYPOINT ["codegend"]
CMD ["run", "--log-format", "json"]
