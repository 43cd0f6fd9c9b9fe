# otp-service: slim, non-root, read-only root filesystem friendly, installed from the lock file
# (exact versions with hashes: scripts/lock.sh refreshes it). Configured by a mounted file plus
# environment variables; all state (the outbox) lives in the volume /var/lib/otp-service.
FROM python:3.11-slim AS build
# Another package index (a mirror) for the build only: --build-arg PIP_INDEX_URL=...
ARG PIP_INDEX_URL
WORKDIR /src
RUN python -m venv /opt/otp-service
COPY requirements.lock ./
RUN /opt/otp-service/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY otp_service ./otp_service
COPY templates ./templates
# The package alone: every dependency came from the lock above.
RUN /opt/otp-service/bin/pip install --no-cache-dir --no-deps . \
 && /opt/otp-service/bin/python -m compileall -q /opt/otp-service

FROM python:3.11-slim
# Nothing is written outside the volume: no .pyc at run time (compiled above), SQLite's
# temporary files and $HOME in the volume, so `docker run --read-only` works.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/otp-service/bin:$PATH \
    XDG_STATE_HOME=/var/lib HOME=/var/lib/otp-service SQLITE_TMPDIR=/var/lib/otp-service
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin otp \
 && mkdir -p /var/lib/otp-service && chown 10001:10001 /var/lib/otp-service \
 && chmod 0700 /var/lib/otp-service
COPY --from=build /opt/otp-service /opt/otp-service
# The outbox (SQLite, created 0600): keep it on a volume so accepted messages survive a new
# container.
VOLUME ["/var/lib/otp-service"]
USER 10001:10001
EXPOSE 8787
# OTP_SERVICE_HEALTHCHECK_URL: where the check asks when the service listens elsewhere (e.g.
# `--network host` with another `--port`).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('OTP_SERVICE_HEALTHCHECK_URL', 'http://127.0.0.1:8787/healthz'), timeout=2)"]
# Mount your config at /etc/otp-service/config.yaml; keep secrets in env (${VAR} in the file).
ENTRYPOINT ["otp-service"]
CMD ["serve", "--config", "/etc/otp-service/config.yaml", "--host", "0.0.0.0", "--port", "8787"]
