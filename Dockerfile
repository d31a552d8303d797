# The deliverytrack worker. Used by docker-compose.yml; needs no Java (the broker is separate).
#
# Stage 1 builds the wheel as CI does (tests/integration/test_wheel.py builds, installs and runs
# it on every run); stage 2 installs only that wheel, so the image holds exactly what the wheel
# holds: no source tree, no symlinks. This file itself is not built in CI (no Docker engine there).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# The real package folders. deliverytrack/models, /tables and /streams are symlinks to them for
# the editable checkout; the build does not follow them: pyproject.toml's package-dir maps
# deliverytrack.models -> models/ etc., so the wheel is the same whether COPY keeps them or not.
COPY deliverytrack ./deliverytrack
COPY models ./models
COPY tables ./tables
COPY streams ./streams
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
COPY --from=build /dist /dist
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist
# Both listeners on every interface of the container: the API (6066) then needs
# DELIVERYTRACK_API_TOKENS (the worker refuses to start without); the webhook ingress (6067)
# is the one to expose to providers.
ENV DELIVERYTRACK_DATA_DIR=/var/lib/deliverytrack \
    DELIVERYTRACK_WEB_HOST=0.0.0.0 \
    DELIVERYTRACK_WEBHOOK_HOST=0.0.0.0
WORKDIR /app
VOLUME /var/lib/deliverytrack
EXPOSE 6066 6067
ENTRYPOINT ["deliverytrack"]
CMD ["worker"]
