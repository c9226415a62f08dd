// The load benchmark (`cargo xtask bench-load`): not part of the test suite. One server in local
// mode (no sign-in in the way) with the README's build, and Debian's chromium throttled by the
// benchmark itself. It prints figures; nothing in it is a timed assertion.
import { defineConfig } from '@playwright/test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const port = Number(process.env.E2E_PORT ?? 3927);
const bin = process.env.SWITCHYARD_BIN;
const siteRoot = process.env.SWITCHYARD_SITE_ROOT;
if (!bin || !siteRoot) {
  throw new Error('SWITCHYARD_BIN and SWITCHYARD_SITE_ROOT must be set: run `cargo xtask bench-load`');
}
const dataDir = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));

export default defineConfig({
  testDir: './bench',
  testMatch: /.*\.bench\.ts/,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  timeout: 120_000,
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    },
  },
  webServer: {
    command: `"${bin}" --bind 127.0.0.1:${port} --data-dir "${dataDir}" --site-root "${siteRoot}"`,
    url: `http://127.0.0.1:${port}/readyz`,
    reuseExistingServer: false,
    timeout: 60_000,
  },
});
