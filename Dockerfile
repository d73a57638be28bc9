# syntax=docker/dockerfile:1
#
# abilitysync: a build stage with the compilers and -dev packages; an
# `emulator` stage with the vector DB emulator alone (for compose and tests:
# docker build --target emulator); and the runtime stage (the default target)
# with only the shared libraries, abilitysync, the migrations and the
# entrypoint, running as an unprivileged user.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc make pkg-config libc6-dev libpq-dev libjansson-dev libssl-dev libevent-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include/ include/
COPY src/ src/
COPY api/openapi.json api/openapi.json
COPY emulator/ emulator/
RUN make BUILD=release all

FROM debian:bookworm-slim AS emulator
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjansson4 libssl3 libevent-2.1-7 libevent-openssl-2.1-7 \
      libcurl4 libpq5 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --no-create-home --shell /usr/sbin/nologin emulator
COPY --from=build /src/build/release/vdb-emulator /usr/local/bin/
USER emulator
EXPOSE 8765
ENTRYPOINT ["vdb-emulator"]
CMD ["--listen", "0.0.0.0:8765"]

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpq5 libjansson4 libssl3 libevent-2.1-7 libevent-openssl-2.1-7 libcurl4 ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system abilitysync \
 && useradd --system --gid abilitysync --home-dir /app --no-create-home --shell /usr/sbin/nologin abilitysync
WORKDIR /app
COPY --from=build /src/build/release/abilitysync /usr/local/bin/
COPY drizzle-compat/drizzle/ /app/drizzle-compat/drizzle/
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# Listening beyond loopback needs API_KEYS (or ALLOW_UNAUTHENTICATED=true, on purpose).
ENV LISTEN=0.0.0.0:8080 \
    MIGRATIONS_DIR=/app/drizzle-compat/drizzle \
    LOG_FORMAT=json \
    DB_WAIT=60
USER abilitysync:abilitysync
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 CMD ["abilitysync", "healthcheck"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["abilitysync", "serve"]
