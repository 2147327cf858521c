#!/usr/bin/env node
// A real OpenID provider (the certified `oidc-provider` package) for the Go end-to-end tests
// (tests/internal/oidcpeer), which write its configuration and start it on loopback:
//
//   node oidc.mjs CONFIG.json
//
// CONFIG.json holds:
//
//   {"port": N,                     listen on 127.0.0.1:N; the issuer is http://127.0.0.1:N
//    "keys": [private JWK, ...],    the first one signs access tokens; all are in the JWKS
//    "clients": [metadata, ...],    oidc-provider client metadata, passed through as is
//    "claims": {client_id: {...}},  extra claims put in that client's access tokens
//    "resources": [url, ...],       resource indicators (audiences) that get JWT access tokens
//    "scopes": [scope, ...],        resource scopes granted besides the OpenID ones
//    "accessTokenTTL": seconds}
//
// Once listening it prints exactly one line, `READY <issuer>`, on stdout. It exits 0 on
// SIGTERM or SIGINT, 98 when the port is taken (EADDRINUSE, so the caller can tell that from
// a broken configuration and pick another port) and 1 on any other failure, with the reason on
// stderr. Test use only: CORS is open to every origin and keys and secrets come from a file.
//
// It runs under Node 22 (oidc-provider 9 requires it).

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import Provider, { errors } from "oidc-provider";

const host = "127.0.0.1";
const exitPortTaken = 98;

function fail(message) {
  process.stderr.write(`oidc.mjs: ${message}\n`);
  process.exit(1);
}

function loadConfig(path) {
  if (!path) {
    fail("usage: oidc.mjs CONFIG.json");
  }
  let config;
  try {
    config = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    fail(`read ${path}: ${err.message}`);
  }
  const { port, keys, clients, resources, scopes, accessTokenTTL } = config;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    fail(`port ${port}: want a TCP port`);
  }
  if (!Array.isArray(keys) || keys.length === 0) {
    fail("keys: want at least one private JWK");
  }
  if (typeof keys[0].kid !== "string" || typeof keys[0].alg !== "string") {
    fail("keys[0]: the signing key needs a kid and an alg");
  }
  if (!Array.isArray(clients) || !Array.isArray(resources) || !Array.isArray(scopes)) {
    fail("clients, resources and scopes must be arrays");
  }
  if (!Number.isInteger(accessTokenTTL) || accessTokenTTL <= 0) {
    fail(`accessTokenTTL ${accessTokenTTL}: want a positive number of seconds`);
  }
  return { ...config, claims: config.claims ?? {} };
}

const config = loadConfig(process.argv[2]);
const issuer = `http://${host}:${config.port}`;
const signer = config.keys[0];
const resources = new Set(config.resources);
// Resource servers accept the configured scopes; the OpenID ones (openid, offline_access) are
// for the provider itself and never reach an access token's audience.
const resourceScope = config.scopes.join(" ");
// A client with redirect URIs goes through the authorization endpoint, which needs a login
// page: the development one is enabled only then, as nothing else would render it.
const interactive = config.clients.some((c) => Array.isArray(c.redirect_uris) && c.redirect_uris.length > 0);
const ttl = (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.accessTokenTTL;

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  scopes: ["openid", "offline_access", ...config.scopes],
  // Without this every client defaults to RS256 ID tokens, which the provider refuses when no
  // RSA key is configured (an EC-only key set after a rotation).
  clientDefaults: { id_token_signed_response_alg: signer.alg },
  // The cookies only sign interaction state; fresh keys per run are enough.
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  clientBasedCORS: () => true,
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: interactive },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // With a single resource configured, a token request that names none is for it.
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? (resources.size === 1 ? [...resources][0] : undefined),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        // The indicator is compared exactly as sent: the gateway checks `aud` the same way.
        if (!resources.has(resource)) {
          throw new errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          scope: resourceScope,
          audience: resource,
          accessTokenTTL: config.accessTokenTTL,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: signer.alg, kid: signer.kid } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => config.claims[token.clientId],
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
});

// Failures inside the provider become OAuth error responses; their cause goes to stderr,
// which the Go helper shows when a test fails.
provider.on("server_error", (_ctx, err) => process.stderr.write(`oidc.mjs: server_error: ${err.stack ?? err}\n`));
provider.on("grant.error", (_ctx, err) => process.stderr.write(`oidc.mjs: grant.error: ${err.message} ${err.error_description ?? ""}\n`));

const server = http.createServer(provider.callback());
server.on("error", (err) => {
  process.stderr.write(`oidc.mjs: listen on ${host}:${config.port}: ${err.message}\n`);
  process.exit(err.code === "EADDRINUSE" ? exitPortTaken : 1);
});
server.listen({ host, port: config.port }, () => {
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  // Keep-alive connections would hold close() open; the Go side kills the process group if
  // this still takes too long.
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
