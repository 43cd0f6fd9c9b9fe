# otp-service: slim, non-root, configured by a mounted file plus environment variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY otp_service ./otp_service
COPY templates ./templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin otp \
 && mkdir -p /var/lib/otp-service && chown 10001:10001 /var/lib/otp-service
# The outbox (SQLite): keep it on a volume so accepted messages survive a new container.
ENV XDG_STATE_HOME=/var/lib
VOLUME ["/var/lib/otp-service"]
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=2)"
# Mount your config at /etc/otp-service/config.yaml; keep secrets in env (${VAR} in the file).
ENTRYPOINT ["otp-service"]
CMD ["serve", "--config", "/etc/otp-service/config.yaml", "--host", "0.0.0.0", "--port", "8787"]
