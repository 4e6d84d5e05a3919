# syntax=docker/dockerfile:1
#
# Keywarden broker image.
#   docker build -t keywarden .
#   docker run --rm -p 8750:8750 -v keywarden-data:/data keywarden
# The first start prints an admin API key once (docker logs); data lives in the /data volume.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------- build
FROM ${NODE_IMAGE} AS build
# toolchain for better-sqlite3 and the execve addon (binding.gyp, built by `node-gyp rebuild`
# from the package's own install script)
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# the node headers ship with the official image: no download during node-gyp
ENV npm_config_nodedir=/usr/local
WORKDIR /app
COPY package.json package-lock.json binding.gyp .prebuild-installrc ./
COPY native ./native
COPY scripts ./scripts
# the auditors' console (prepare bundles it into dist/console-app)
COPY console ./console
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci runs the install (scripts/build-native.mjs) and prepare (tsc, console bundle) scripts
RUN npm ci
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && npm cache clean --force

# ---------------------------------------------------------------- runtime
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    KEYWARDEN_LISTEN=0.0.0.0:8750 \
    KEYWARDEN_DATA_DIR=/data
RUN groupadd --system --gid 10001 keywarden \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin keywarden \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && chmod 0700 /data
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/keywarden_execve.node ./build/Release/keywarden_execve.node
COPY bin ./bin
COPY migrations ./migrations
COPY openapi.yaml ./openapi.yaml
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8750
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8750/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["serve"]
