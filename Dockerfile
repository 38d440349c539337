# Keyward: one image for every role (API, worker, migration, agent); the command picks the role.
# Nothing secret is baked in: the database URL, the key-encryption key file and SMTP credentials come from the
# environment (and mounted secret files) at run time; see docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY core ./core
COPY models ./models
COPY pki ./pki
COPY worker ./worker
COPY agent ./agent
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin keyward
# A fixed uid, so a mounted secret file (chmod 600) can be chowned to it on the host.
USER 10001
EXPOSE 8000
CMD ["keyward", "serve", "--host", "0.0.0.0", "--port", "8000"]
