# portside: one image with both services. The registry is the default entry point, as in
# registry:2 (config at /etc/docker/registry/config.yml, data in /var/lib/registry, every
# key overridable by REGISTRY_* variables); `--entrypoint tokenauth` runs the token server
# and `--entrypoint htpasswd` prints bcrypt lines for users files.
#
#   docker build -t portside .
#   docker build --build-arg BASE_IMAGE=my-python-base -t portside .
#
# BASE_IMAGE must provide python3 (3.11 or newer) with the venv module.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Optional: a package index other than pip's default (pip.conf in the base works too).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY registry /src/registry
COPY tokenauth /src/tokenauth
RUN python3 -m venv /opt/portside \
    && /opt/portside/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && find /opt/portside -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
COPY --from=build /opt/portside /opt/portside
# A fixed uid, so that a bind-mounted data directory can be prepared for it:
# chown -R 1000:1000 data
RUN groupadd --system --gid 1000 registry \
    && useradd --system --uid 1000 --gid registry --home-dir /var/lib/registry \
       --shell /usr/sbin/nologin registry \
    && mkdir -p /var/lib/registry /etc/docker/registry \
    && chown registry:registry /var/lib/registry \
    && printf '%s\n' \
       'version: 0.1' \
       'storage:' \
       '  filesystem:' \
       '    rootdirectory: /var/lib/registry' \
       '  cache:' \
       '    blobdescriptor: inmemory' \
       'http:' \
       '  addr: :5000' \
       '  headers:' \
       '    X-Content-Type-Options: [nosniff]' \
       > /etc/docker/registry/config.yml
ENV PATH=/opt/portside/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER registry
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["registry", "serve"]
CMD ["/etc/docker/registry/config.yml"]
