# syntax=docker/dockerfile:1
#
# abilitysync: a build stage with the compilers and -dev packages, and a
# runtime stage with only the shared libraries, the binary, the migrations and
# the entrypoint, running as an unprivileged user.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc make pkg-config libc6-dev libpq-dev libjansson-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include/ include/
COPY src/ src/
RUN make BUILD=release all

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libjansson4 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system abilitysync \
 && useradd --system --gid abilitysync --home-dir /app --no-create-home --shell /usr/sbin/nologin abilitysync
WORKDIR /app
COPY --from=build /src/build/release/abilitysync /usr/local/bin/abilitysync
COPY drizzle-compat/drizzle/ /app/drizzle-compat/drizzle/
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV MIGRATIONS_DIR=/app/drizzle-compat/drizzle \
    LOG_FORMAT=json \
    DB_WAIT=60
USER abilitysync:abilitysync
ENTRYPOINT ["docker-entrypoint.sh"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["abilitysync", "migrate", "status"]
CMD ["abilitysync", "migrate", "status"]
