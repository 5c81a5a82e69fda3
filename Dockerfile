# syntax=docker/dockerfile:1
# Build stage: install everything, compile TypeScript, then drop dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: Node 24 LTS, run as the unprivileged `node` user. The app files stay owned by
# root (mode 644/755): the runtime user can read and run them, never change them.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
# The config the gateway reads (`--config` wins over it). Mount your own file and point this at it:
#   docker run -v $PWD/gateway.yaml:/etc/tollgate/gateway.yaml:ro -e TOLLGATE_CONFIG=/etc/tollgate/gateway.yaml …
ENV TOLLGATE_CONFIG=/app/config/gateway.yaml
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
COPY console ./console
USER node
# 8080 public. 8081 admin: it binds loopback inside the container unless ADMIN_HOST=0.0.0.0 (the
# shipped config reads it; the gateway warns at start) — publish it only to a private network.
EXPOSE 8080 8081
# Liveness from the admin listener (loopback inside the container, whichever host it binds).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8081/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/tollgate.js"]
CMD ["start"]
