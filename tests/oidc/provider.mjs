// A real OpenID provider for kb's single sign-on tests: the certified `oidc-provider`, configured by the
// test through a JSON file (argv[2]): issuer port, the kb client, users with their groups, the signing keys.
// Access tokens for kb's audience are JWTs (resource indicators) that carry the user's groups, as Keycloak,
// Entra ID and Okta issue them when configured as docs/operations.md says. Logins go through the
// provider's own login form (its development interactions: any password, the login name is the account).
import fs from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { port, audience, users } = config;
const issuer = `http://127.0.0.1:${port}`;

function claimsOf(id) {
  const user = users[id];
  return { sub: id, name: user.name, email: user.email, email_verified: true, groups: user.groups };
}

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  cookies: { keys: ['kb-test-cookie-secret'] },
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  pkce: { required: () => true },
  ttl: { AccessToken: config.accessTokenTtl || 600, AuthorizationCode: 60, IdToken: 600, Session: 3600, Interaction: 600, Grant: 3600 },
  async findAccount(_ctx, id) {
    if (!users[id]) return undefined;
    return { accountId: id, async claims() { return claimsOf(id); } };
  },
  // First-party client: no consent screen (the recipe from oidc-provider's documentation).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['groups', 'name', 'email']);
    grant.addResourceScope(audience, 'openid profile email groups');
    await grant.save();
    return grant;
  },
  async extraTokenClaims(_ctx, token) {
    if (!token.accountId || !users[token.accountId]) return undefined;
    const { name, groups } = claimsOf(token.accountId);
    return { name, groups };
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'openid profile email groups',
        audience,
        accessTokenTTL: config.accessTokenTtl || 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
