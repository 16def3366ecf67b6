# The kontinuum control plane image: `docker build -t kontinuum .` (see deploy/README.md).
FROM python:3.11-slim
WORKDIR /opt/kontinuum
COPY pyproject.toml setup.py README.md MANIFEST.in ./
COPY proto ./proto
COPY kontinuum ./kontinuum
RUN pip install --no-cache-dir . && useradd --uid 65532 --no-create-home kontinuum
USER 65532
EXPOSE 18000 18001
ENTRYPOINT ["kontinuum"]
CMD ["serve", "--config", "/etc/kontinuum/fleet"]
