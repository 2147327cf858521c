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
// Besides client_credentials it grants OAuth 2.0 Token Exchange (RFC 8693), which the provider
// does not implement itself, to clients registered with that grant type: the subject token
// must be an access token this provider issued (a JWT signed by one of its keys, unexpired),
// and the answer is a JWT access token with the subject's `sub`, for the requested audience
// (a configured resource), with an `act` claim naming the client that asked.
//
// Once listening it prints exactly one line, `READY <issuer>`, on stdout. It exits 0 on
// SIGTERM or SIGINT, 98 when the port is taken (EADDRINUSE, so the caller can tell that from
// a broken configuration and pick another port) and 1 on any other failure, with the reason on
// stderr. Test use only: CORS is open to every origin and keys and secrets come from a file.
//
// It runs under Node 22 (oidc-provider 9 requires it).

import { createPublicKey, randomBytes, verify } from "node:crypto";
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

// resourceServerInfo is what a token for a configured resource looks like.
function resourceServerInfo(resource) {
  return {
    scope: resourceScope,
    audience: resource,
    accessTokenTTL: config.accessTokenTTL,
    accessTokenFormat: "jwt",
    jwt: { sign: { alg: signer.alg, kid: signer.kid } },
  };
}

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
        return resourceServerInfo(resource);
      },
    },
  },
  // An exchanged token carries the claims of the exchange (act) instead of its client's.
  extraTokenClaims: async (_ctx, token) => token.exchangeClaims ?? config.claims[token.clientId],
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
});

// Token exchange (RFC 8693).
const tokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange";
const accessTokenType = "urn:ietf:params:oauth:token-type:access_token";
// How each algorithm of the provider's keys verifies (JWS signatures of ECDSA are r||s).
const verifiers = { RS256: {}, ES256: { dsaEncoding: "ieee-p1363" } };

// ownAccessToken returns the claims of a JWT access token this provider issued: signed by one
// of its keys, with its issuer, unexpired. Anything else is invalid_grant.
function ownAccessToken(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) {
    throw new errors.InvalidGrant("subject_token is not a JWT");
  }
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
  } catch {
    throw new errors.InvalidGrant("subject_token is not a JWT");
  }
  const key = config.keys.find((k) => k.kid === header.kid);
  if (!key || key.alg !== header.alg || !(header.alg in verifiers)) {
    throw new errors.InvalidGrant("subject_token is not signed by a key of this provider");
  }
  const ok = verify("sha256", Buffer.from(`${parts[0]}.${parts[1]}`), { key: createPublicKey({ key, format: "jwk" }), ...verifiers[header.alg] },
    Buffer.from(parts[2], "base64url"));
  if (!ok) {
    throw new errors.InvalidGrant("subject_token signature does not verify");
  }
  if (claims.iss !== issuer || typeof claims.sub !== "string" || typeof claims.exp !== "number") {
    throw new errors.InvalidGrant("subject_token is not an access token of this provider");
  }
  if (claims.exp * 1000 <= Date.now()) {
    throw new errors.InvalidGrant("subject_token expired");
  }
  return claims;
}

provider.registerGrantType(
  tokenExchange,
  async (ctx) => {
    const { client, params } = ctx.oidc;
    if (params.subject_token_type !== accessTokenType) {
      throw new errors.InvalidRequest(`subject_token_type must be ${accessTokenType}`);
    }
    if (params.requested_token_type && params.requested_token_type !== accessTokenType) {
      throw new errors.InvalidRequest(`requested_token_type must be ${accessTokenType}`);
    }
    if (params.actor_token) {
      throw new errors.InvalidRequest("actor_token is not supported");
    }
    const subject = ownAccessToken(params.subject_token);
    const audience = params.audience ?? params.resource;
    if (!audience || !resources.has(audience)) {
      throw new errors.InvalidTarget("the audience is not a resource of this provider");
    }
    const resourceServer = new provider.ResourceServer(audience, resourceServerInfo(audience));
    const scope = (params.scope ?? "").split(" ").filter((s) => s && resourceServer.scopes.has(s)).join(" ");
    const token = new provider.AccessToken({ accountId: subject.sub, client, gty: "token_exchange", scope: scope || undefined, resourceServer });
    token.exchangeClaims = { act: { sub: client.clientId } };
    ctx.oidc.entity("AccessToken", token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      issued_token_type: accessTokenType,
      token_type: "Bearer",
      expires_in: token.expiration,
      ...(token.scope ? { scope: token.scope } : undefined),
    };
  },
  ["subject_token", "subject_token_type", "requested_token_type", "audience", "resource", "scope", "actor_token", "actor_token_type"],
);

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
