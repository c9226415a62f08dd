// Playwright configuration: Debian's chromium (never a downloaded browser) against a freshly
// started Switchyard server on a loopback port with its own empty data directory.
import { defineConfig } from '@playwright/test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const port = Number(process.env.E2E_PORT ?? 3917);
const bin = process.env.SWITCHYARD_BIN;
const siteRoot = process.env.SWITCHYARD_SITE_ROOT;
if (!bin || !siteRoot) {
  throw new Error('SWITCHYARD_BIN and SWITCHYARD_SITE_ROOT must be set: run `cargo xtask e2e` or `cargo xtask test`');
}
const dataDir = process.env.E2E_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'switchyard-e2e-'));

export default defineConfig({
  testDir: './tests',
  fullyParallel: false,
  workers: 1,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [['list']],
  timeout: 30_000,
  use: {
    baseURL: `http://127.0.0.1:${port}`,
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
  webServer: {
    command: `"${bin}" --bind 127.0.0.1:${port} --data-dir "${dataDir}" --site-root "${siteRoot}"`,
    url: `http://127.0.0.1:${port}/readyz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: 'pipe',
    stderr: 'pipe',
  },
});
