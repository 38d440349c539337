FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY core ./core
COPY models ./models
COPY pki ./pki
COPY worker ./worker
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["keyward", "serve", "--host", "0.0.0.0", "--port", "8000"]
