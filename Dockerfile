# The Xietong server image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY signaling ./signaling
COPY bots ./bots
COPY mini_apps ./mini_apps
COPY clients ./clients
RUN pip install --no-cache-dir .
RUN useradd --system --uid 10001 xietong && mkdir -p /data && chown xietong /data
USER xietong
ENV XT_HOST=0.0.0.0 XT_PORT=8080 XT_DATA_DIR=/data XT_SEED_DEMO=false
EXPOSE 8080
CMD ["xietong", "serve"]
