// Playwright configuration: Debian's chromium (never a downloaded browser) against freshly
// started servers on loopback, each with its own empty data directory:
//   - a real OpenID Connect provider (npm `oidc-provider`, `oidc/provider.mjs`);
//   - Switchyard with OIDC login against it (most tests; signed in by `auth.setup.ts`);
//   - Switchyard in local mode (no login), for `local.spec.ts`.
import { defineConfig } from '@playwright/test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const port = Number(process.env.E2E_PORT ?? 3917);
const oidcPort = port + 1;
const localPort = port + 2;
const bin = process.env.SWITCHYARD_BIN;
const siteRoot = process.env.SWITCHYARD_SITE_ROOT;
if (!bin || !siteRoot) {
  throw new Error('SWITCHYARD_BIN and SWITCHYARD_SITE_ROOT must be set: run `cargo xtask e2e` or `cargo xtask test`');
}
const dataDir = (name: string) => mkdtempSync(join(tmpdir(), `switchyard-e2e-${name}-`));
const appUrl = `http://127.0.0.1:${port}`;
const clientSecret = 'e2e-client-secret';

export const users = ['alice', 'oscar', 'victor'] as const;
export const stateFile = (user: string) => join(__dirname, '.auth', `${user}.json`);
export const localURL = `http://127.0.0.1:${localPort}`;

export default defineConfig({
  testDir: './tests',
  fullyParallel: false,
  workers: 1,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [['list']],
  timeout: 30_000,
  use: {
    baseURL: appUrl,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  projects: [
    { name: 'sign-in', testMatch: /auth\.setup\.ts/ },
    {
      name: 'oidc',
      testMatch: /.*\.spec\.ts/,
      testIgnore: /local\.spec\.ts/,
      dependencies: ['sign-in'],
      use: { storageState: stateFile('alice') },
    },
    { name: 'local', testMatch: /local\.spec\.ts/, use: { baseURL: localURL } },
  ],
  webServer: [
    {
      command: 'node oidc/provider.mjs',
      url: `http://127.0.0.1:${oidcPort}/.well-known/openid-configuration`,
      env: { OIDC_PORT: String(oidcPort), APP_URL: appUrl, OIDC_CLIENT_SECRET: clientSecret },
      reuseExistingServer: false,
      timeout: 30_000,
      stdout: 'pipe',
      stderr: 'pipe',
    },
    {
      command: `"${bin}" --bind 127.0.0.1:${port} --data-dir "${dataDir('oidc')}" --site-root "${siteRoot}"`,
      url: `${appUrl}/readyz`,
      env: {
        SWITCHYARD_OIDC_ISSUER: `http://127.0.0.1:${oidcPort}`,
        SWITCHYARD_OIDC_CLIENT_ID: 'switchyard',
        SWITCHYARD_OIDC_CLIENT_SECRET: clientSecret,
        SWITCHYARD_OIDC_SCOPES: 'openid profile email groups',
      },
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: 'pipe',
      stderr: 'pipe',
    },
    {
      // A small start intake, so the load-levelling refusal (429) can be shown.
      command: `"${bin}" --bind 127.0.0.1:${localPort} --data-dir "${dataDir('local')}" --site-root "${siteRoot}" --max-live-instances 3`,
      url: `${localURL}/readyz`,
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: 'pipe',
      stderr: 'pipe',
    },
  ],
});
