#!/usr/bin/env node
// An MCP host built on the official TypeScript SDK client, driven by the Go end-to-end tests
// (tests/internal/nodepeer.RunClient). It connects over Streamable HTTP, runs one scripted
// exchange, ends the session with DELETE and prints exactly one JSON line on stdout:
//
//   {"protocolVersion":..., "sessionId":..., "tools":[names], "resources":[uris]|null,
//    "call":<result>|null, "read":<result>|null, "prompt":<result>|null}
//
// Any failure (transport, HTTP status, JSON-RPC error, bad arguments) is written to stderr and
// the process exits 1, so the caller can assert on both success and refusal.
//
// Usage:
//   node client.mjs --url URL [--token TOKEN | --client-id ID --client-secret SECRET --issuer URL
//                   [--scope SCOPES]] [--call NAME [--args JSON]]
//                   [--read URI] [--prompt NAME [--prompt-args JSON]] [--timeout-ms N]
//
// With --client-id, the SDK's own OAuth client (ClientCredentialsProvider) gets the token: on
// the gateway's 401 it reads the protected resource metadata the challenge names (RFC 9728),
// then the authorization server's metadata, and asks that server (it must be --issuer) for a
// token with the client credentials grant. The JSON line then also holds "authServers": the
// authorization servers the SDK discovered.
//
// It runs under Node 20 and Node 22.

import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";

const usage =
  "usage: client.mjs --url URL [--token TOKEN | --client-id ID --client-secret SECRET --issuer URL [--scope SCOPES]] [--call NAME [--args JSON]] " +
  "[--read URI] [--prompt NAME [--prompt-args JSON]] [--timeout-ms N]";

function fail(message) {
  process.stderr.write(`client.mjs: ${message}\n`);
  process.exit(1);
}

// parseObject parses a JSON flag value that must be an object (tool or prompt arguments).
function parseObject(flag, text) {
  if (text === undefined) {
    return {};
  }
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    fail(`--${flag}: invalid JSON: ${err.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    fail(`--${flag}: want a JSON object`);
  }
  return value;
}

function parseOptions() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        url: { type: "string" },
        token: { type: "string" },
        "client-id": { type: "string" },
        "client-secret": { type: "string" },
        issuer: { type: "string" },
        scope: { type: "string" },
        call: { type: "string" },
        args: { type: "string" },
        read: { type: "string" },
        prompt: { type: "string" },
        "prompt-args": { type: "string" },
        "timeout-ms": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail(`${err.message}\n${usage}`);
  }
  const v = parsed.values;
  if (v["client-id"] !== undefined && (v.token !== undefined || !v["client-secret"] || !v.issuer)) {
    fail("--client-id needs --client-secret and --issuer, and excludes --token");
  }
  if (!v.url) {
    fail(`--url is required\n${usage}`);
  }
  let url;
  try {
    url = new URL(v.url);
  } catch {
    fail(`--url: not a URL: ${v.url}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    fail(`--url: want http or https, got ${url.protocol}`);
  }
  if (v.args !== undefined && v.call === undefined) {
    fail("--args needs --call");
  }
  if (v["prompt-args"] !== undefined && v.prompt === undefined) {
    fail("--prompt-args needs --prompt");
  }
  let timeout = 30000;
  if (v["timeout-ms"] !== undefined) {
    timeout = Number(v["timeout-ms"]);
    if (!Number.isInteger(timeout) || timeout <= 0 || timeout > 600000) {
      fail("--timeout-ms: want an integer in 1..600000");
    }
  }
  return {
    url,
    token: v.token,
    clientId: v["client-id"],
    clientSecret: v["client-secret"],
    issuer: v.issuer,
    scope: v.scope,
    call: v.call,
    callArgs: parseObject("args", v.args),
    read: v.read,
    prompt: v.prompt,
    promptArgs: parseObject("prompt-args", v["prompt-args"]),
    timeout,
  };
}

// describe renders an SDK error with its JSON-RPC or HTTP code when it has one.
function describe(err) {
  if (err && typeof err === "object" && "code" in err && err.code !== undefined) {
    return `${err.message} (code ${err.code})`;
  }
  return err instanceof Error ? err.message : String(err);
}

async function main() {
  const opts = parseOptions();
  const requestInit = {};
  if (opts.token !== undefined) {
    requestInit.headers = { Authorization: `Bearer ${opts.token}` };
  }
  let authProvider;
  if (opts.clientId !== undefined) {
    authProvider = new ClientCredentialsProvider({
      clientId: opts.clientId,
      clientSecret: opts.clientSecret,
      expectedIssuer: opts.issuer,
      scope: opts.scope,
    });
  }
  // The authorization servers the SDK discovered, from the metadata documents it fetched.
  const authServers = new Set();
  const fetchSeen = async (input, init) => {
    const resp = await fetch(input, init);
    // CLIENT_DEBUG=1 traces every request and its answer on stderr (for debugging a test).
    if (process.env.CLIENT_DEBUG) process.stderr.write(`fetch ${init?.method ?? "GET"} ${input} -> ${resp.status} ${resp.headers.get("www-authenticate") ?? ""}\n`);
    const u = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    if (u.pathname.startsWith("/.well-known/oauth-protected-resource") && resp.ok) {
      const doc = await resp.clone().json();
      for (const s of doc.authorization_servers ?? []) {
        authServers.add(s);
      }
    }
    return resp;
  };
  const transport = new StreamableHTTPClientTransport(opts.url, { requestInit, authProvider, fetch: fetchSeen });
  const client = new Client({ name: "gatehouse-e2e-node-host", version: "1.0.0" }, { capabilities: {} });
  // Errors on the optional standalone GET stream are reported here; they do not fail the run
  // unless a request fails too.
  const transportErrors = [];
  client.onerror = (err) => transportErrors.push(describe(err));
  const reqOpts = { timeout: opts.timeout };

  const step = async (name, fn) => {
    try {
      return await fn();
    } catch (err) {
      const extra = transportErrors.length > 0 ? ` (transport: ${transportErrors.join("; ")})` : "";
      throw new Error(`${name}: ${describe(err)}${extra}`);
    }
  };

  try {
    await step("initialize", () => client.connect(transport, reqOpts));
    const out = {
      protocolVersion: transport.protocolVersion ?? null,
      sessionId: transport.sessionId ?? null,
      tools: [],
      resources: null,
      call: null,
      read: null,
      prompt: null,
    };
    if (authProvider !== undefined) {
      out.authServers = [...authServers];
    }
    // Every page: the gateway's aggregated endpoint pages its merged list.
    out.toolPages = 0;
    let cursor;
    do {
      const page = await step("tools/list", () => client.listTools(cursor === undefined ? undefined : { cursor }, reqOpts));
      out.tools.push(...page.tools.map((tool) => tool.name));
      out.toolPages++;
      cursor = page.nextCursor;
    } while (cursor !== undefined && out.toolPages < 100);
    if (opts.call !== undefined) {
      out.call = await step(`tools/call ${opts.call}`, () =>
        client.callTool({ name: opts.call, arguments: opts.callArgs }, undefined, reqOpts),
      );
    }
    if (opts.read !== undefined) {
      const list = await step("resources/list", () => client.listResources(undefined, reqOpts));
      out.resources = list.resources.map((resource) => resource.uri);
      out.read = await step(`resources/read ${opts.read}`, () =>
        client.readResource({ uri: opts.read }, reqOpts),
      );
    }
    if (opts.prompt !== undefined) {
      out.prompt = await step(`prompts/get ${opts.prompt}`, () =>
        client.getPrompt({ name: opts.prompt, arguments: opts.promptArgs }, reqOpts),
      );
    }
    if (transport.sessionId !== undefined) {
      await step("DELETE session", () => transport.terminateSession());
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (err) => fail(describe(err)),
);
