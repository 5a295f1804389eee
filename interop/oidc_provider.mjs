// panva's oidc-provider (certified OpenID provider, pinned in package.json) as the company's identity
// provider for tests/interop: started by fixtures/oidc_peer.py through Node 22 with loopback.mjs preloaded.
//
// Everything that differs between the tested configurations comes from the JSON in CHATOPS_OP_CONFIG:
//   path                  issuer path ("" or e.g. "/realms/chatops": discovery is then found by path)
//   people                {key: {sub, email, groups}}: who can sign in
//   groups_claim          where groups go: "groups", a dotted path ("realm_access.roles") or a namespaced name
//   groups_scope          the scope that releases the groups claim ("groups"), or "openid"/"profile"
//   groups_in_id_token    false: the groups claim goes to userinfo only (the ID token never carries it)
//   conform_id_token      oidc-provider's conformIdTokenClaims
//   access_token_format   "jwt" or "opaque" for tokens issued to resource servers (RFC 8707)
//   hide_jwks_uri         drop jwks_uri from the discovery document (a provider that publishes none)
//   client_auth_methods   what the provider accepts and advertises
//   clients               static client metadata (the bot, and a client for resource servers to introspect)
// The provider itself is unchanged: only its documented configuration, a login page that takes the person
// from a cookie (as fixtures.idp does), and automatic consent. GET /_chatops/requests lists what reached the
// token, revocation, introspection and userinfo endpoints (never a secret or a token).
import http from "node:http";
import crypto from "node:crypto";
import Provider from "oidc-provider";

const config = JSON.parse(process.env.CHATOPS_OP_CONFIG ?? "{}");
const mount = config.path ?? "";
const people = config.people ?? {};
const bySub = Object.fromEntries(Object.entries(people).map(([key, person]) => [person.sub, person]));
const seen = [];
const USER_COOKIE = "chatops_op_user";

function placed(path, value) {
  // {"realm_access.roles": v} -> {realm_access: {roles: v}}; a namespaced name (with "/") stays whole.
  if (path.includes("/") || !path.includes(".")) return { [path]: value };
  const [head, ...rest] = path.split(".");
  return { [head]: placed(rest.join("."), value) };
}

function groupsClaimName() {
  const name = config.groups_claim ?? "groups";
  return name.includes("/") || !name.includes(".") ? name : name.split(".")[0];
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), kid: crypto.randomUUID(), use: "sig", alg: "RS256" };
}

function cookie(req, name) {
  const found = (req.headers.cookie ?? "").split(";").map((c) => c.trim().split("="));
  return found.find(([key]) => key === name)?.[1];
}

const claimsByScope = {
  openid: ["sub"],
  email: ["email", "email_verified"],
  profile: ["name"],
};
const groupsScope = config.groups_scope ?? "groups";
claimsByScope[groupsScope] = [...(claimsByScope[groupsScope] ?? []), groupsClaimName()];

function configuration() {
  return {
    clients: config.clients ?? [],
    clientAuthMethods: config.client_auth_methods ?? ["client_secret_basic", "client_secret_post", "private_key_jwt"],
    jwks: { keys: [signingKey()] },
    cookies: { keys: [crypto.randomBytes(16).toString("hex")] },
    claims: claimsByScope,
    conformIdTokenClaims: config.conform_id_token ?? true,
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resource) => ({
          scope: "mcp",
          audience: resource,
          accessTokenTTL: config.access_token_ttl ?? 300,
          accessTokenFormat: config.access_token_format ?? "jwt",
          jwt: { sign: { alg: "RS256" } },
        }),
      },
    },
    // What a resource server needs to decide on its own (the fixture MCP servers gate on `groups`); in
    // JWT access tokens these are claims, for opaque ones they come back from introspection.
    extraTokenClaims: async (ctx, token) => {
      const person = bySub[token.accountId];
      return token.kind === "AccessToken" && token.resourceServer && person ? { groups: person.groups } : undefined;
    },
    findAccount: async (ctx, sub) => {
      const person = bySub[sub];
      if (!person) return undefined;
      return {
        accountId: sub,
        claims: async (use) => {
          const base = { sub, email: person.email, email_verified: true, name: sub };
          if (use === "id_token" && config.groups_in_id_token === false) return base;
          return { ...base, ...placed(config.groups_claim ?? "groups", person.groups) };
        },
      };
    },
    interactions: { url: async (ctx, interaction) => `${mount}/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 86400,
      RefreshToken: 86400,
    },
  };
}

let provider;
let callback;
const ready = new Promise((resolve) => {
  const server = http.createServer(async (req, res) => {
    await ready;
    try {
      await handle(req, res);
    } catch (error) {
      res.writeHead(500, { "content-type": "text/plain" }).end(String(error));
    }
  });
  server.listen(0, () => {
    const issuer = `http://127.0.0.1:${server.address().port}${mount}`;
    provider = new Provider(issuer, configuration());
    provider.use(record);
    callback = provider.callback();
    resolve();
  });
});

async function record(ctx, next) {
  await next();
  const route = ctx.oidc?.route;
  if (route === "discovery" && config.hide_jwks_uri && ctx.body) delete ctx.body.jwks_uri;
  if (!["token", "revocation", "introspection", "userinfo"].includes(route)) return;
  const params = ctx.oidc.params ?? {};
  const auth = ctx.headers.authorization ?? "";
  seen.push({
    route,
    status: ctx.status,
    client_id: ctx.oidc.client?.clientId ?? null,
    auth: auth.startsWith("Basic ") ? "client_secret_basic" : params.client_assertion ? "private_key_jwt"
      : params.client_secret ? "client_secret_post" : auth.startsWith("Bearer ") ? "bearer" : "none",
    grant_type: params.grant_type ?? null,
    resource: params.resource ?? null,
    scope: params.scope ?? null,
    token_type_hint: params.token_type_hint ?? null,
    error: ctx.body?.error ?? null,
  });
}

async function handle(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  if (url.pathname === "/_chatops/login") {
    const user = url.searchParams.get("user") ?? "";
    if (!people[user]) return void res.writeHead(400).end("unknown user");
    res.writeHead(200, { "set-cookie": `${USER_COOKIE}=${user}; Path=/; HttpOnly; SameSite=Lax` });
    return void res.end(`logged in as ${user}`);
  }
  if (url.pathname === "/_chatops/requests") {
    res.writeHead(200, { "content-type": "application/json" });
    return void res.end(JSON.stringify({ requests: seen }));
  }
  if (mount && !(url.pathname === mount || url.pathname.startsWith(`${mount}/`))) {
    return void res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not_found"}');
  }
  // Mounted under the issuer's path, as its docs show for a path prefix (oidc-provider derives its URLs
  // from originalUrl).
  req.originalUrl = req.url;
  req.url = req.url.slice(mount.length) || "/";
  if (req.url.startsWith("/interaction/")) return interaction(req, res);
  return callback(req, res);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === "login") {
    const who = people[cookie(req, USER_COOKIE) ?? ""];
    if (!who) return void res.writeHead(401).end("not logged in: visit /_chatops/login?user=<key>");
    return provider.interactionFinished(req, res, { login: { accountId: who.sub } }, { mergeWithLastSubmission: false });
  }
  // Consent is automatic: the tests' people always approve what the bot asks for.
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}
