# One image for every livechat service; docker-compose picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir \
      ./libs/contracts ./libs/runtime ./libs/devstack \
      ./services/memory ./services/usage ./services/inference ./services/gateway
RUN useradd --create-home livechat && mkdir -p /data && chown livechat /data
USER livechat
ENV LIVECHAT_DATA_DIR=/data
CMD ["python", "-m", "gateway"]
