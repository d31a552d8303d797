# The deliverytrack worker. Used by docker-compose.yml; needs no Java (the broker is separate).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY deliverytrack ./deliverytrack
COPY models ./models
COPY tables ./tables
COPY streams ./streams
RUN pip install --no-cache-dir .
ENV DELIVERYTRACK_DATA_DIR=/var/lib/deliverytrack \
    DELIVERYTRACK_WEB_HOST=0.0.0.0
VOLUME /var/lib/deliverytrack
EXPOSE 6066
ENTRYPOINT ["deliverytrack"]
CMD ["worker"]
