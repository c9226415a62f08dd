// A real OpenID Connect provider on loopback for the end-to-end tests (npm `oidc-provider`).
// Its development login accepts any password; the login name picks one of the accounts below,
// whose `groups` claim (served from userinfo, as conformant providers do) maps to a role.
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT ?? 3918);
const appUrl = process.env.APP_URL ?? 'http://127.0.0.1:3917';

const accounts = {
  alice: { name: 'Alice Admin', groups: ['switchyard-admin'] },
  oscar: { name: 'Oscar Operator', groups: ['switchyard-operator'] },
  victor: { name: 'Victor Viewer', groups: ['switchyard-viewer'] },
  nora: { name: 'Nora Norole', groups: ['accounting'] },
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: 'switchyard',
      client_secret: process.env.OIDC_CLIENT_SECRET ?? 'e2e-client-secret',
      redirect_uris: [`${appUrl}/auth/callback`],
      post_logout_redirect_uris: [`${appUrl}/auth/signed-out`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  cookies: { keys: ['switchyard-e2e-cookie-key'] },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: account.name,
          preferred_username: id,
          email: `${id}@example.test`,
          groups: account.groups,
        };
      },
    };
  },
  // A first-party client: grant the requested scopes without a consent screen.
  async loadExistingGrant(ctx) {
    const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
