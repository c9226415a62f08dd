// The operator's dashboard against a real OIDC provider: login, roles, runaways, live charts,
// the audit log, logout; and screenshots of the main pages.
import { type APIRequestContext, expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { stateFile } from '../playwright.config';
import { hydrated, signIn } from './helpers';

const shots = join(__dirname, '..', 'screenshots');
mkdirSync(shots, { recursive: true });

async function start(request: APIRequestContext, name: string, input: unknown, id: string) {
  const response = await request.post('/api/fn/instances/start', {
    form: { name, input: JSON.stringify(input), instance_id: id },
  });
  expect(response.status(), await response.text()).toBe(200);
}

test.describe('without a session', () => {
  test.use({ storageState: { cookies: [], origins: [] } });

  test('a page asks for login and comes back to where it was asked', async ({ page }) => {
    await signIn(page, 'oscar', '/instances?status=Running');
    await expect(page).toHaveURL(/\/instances\?status=Running$/);
    await expect(page.getByTestId('user-role')).toHaveText('operator');
    await expect(page.getByTestId('local-mode-banner')).toHaveCount(0);
  });

  test('server functions refuse a request without a session', async ({ request }) => {
    const response = await request.post('/api/fn/session/whoami');
    expect(response.status()).toBe(401);
  });

  test('a user whose groups grant no role is refused at login', async ({ page }) => {
    await signIn(page, 'nora');
    await expect(page.getByTestId('auth-error')).toContainText('none of your "groups" values grants a Switchyard role; ask an administrator to add you.');
    // A sentence for a person: capitalised, no code quoting.
    await expect(page.getByTestId('auth-error')).toHaveText(/^You are signed in at the identity provider as /);
  });

  test('a crafted next after login stays on this site and the login still succeeds', async ({ page, baseURL }) => {
    // Browsers drop tabs and newlines from URLs: `/\t/evil.example` would become `//evil.example`.
    const crafted = ['/%09/evil.example', '/%0a/evil.example', '/%0d/x', '/%7f/x', '//evil.example', '/%5cevil.example'];
    for (const [i, next] of crafted.entries()) {
      await page.goto(`/auth/login?next=${next}`);
      if (i === 0 || /\/interaction\//.test(page.url())) {
        await expect(page).toHaveURL(/\/interaction\//);
        await page.locator('input[name="login"]').fill('oscar');
        await page.locator('input[name="password"]').fill('any password');
        await page.getByRole('button', { name: 'Sign-in' }).click();
      }
      await expect(page.getByTestId('user-name'), next).toHaveText('oscar');
      expect(page.url(), next).toBe(`${baseURL}/`);
    }
  });

  test('a pending login is kept ten minutes, not eight hours', async ({ request }) => {
    const response = await request.get('/auth/login?next=/instances', { maxRedirects: 0 });
    expect(response.status()).toBe(303);
    const cookie = response.headers()['set-cookie'] ?? '';
    expect(cookie).toContain('switchyard.sid=');
    expect(cookie).toMatch(/Max-Age=600\b/);
  });

  test('the sign-in-failed page starts no new login', async ({ page }) => {
    const logins: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/auth/login')) logins.push(r.url());
    });
    await signIn(page, 'nora');
    await expect(page.getByTestId('auth-error')).toBeVisible();
    await page.waitForLoadState('networkidle');
    expect(logins, 'only the login nora started').toHaveLength(1);
  });

  test('the signed-out page starts no new login', async ({ page }) => {
    await signIn(page, 'oscar');
    await expect(page.getByTestId('user-name')).toHaveText('oscar');
    await hydrated(page);
    const logins: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/auth/login')) logins.push(r.url());
    });
    await page.getByTestId('logout').click();
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await expect(page.getByTestId('signed-out')).toBeVisible();
    await page.waitForLoadState('networkidle');
    expect(logins, 'the signed-out page asked for no login').toHaveLength(0);
    const whoami = await page.request.post('/api/fn/session/whoami');
    expect(whoami.status()).toBe(401);
  });

  test('logout ends the session here and at the provider', async ({ page, context }) => {
    await signIn(page, 'oscar');
    await expect(page.getByTestId('user-name')).toHaveText('oscar');
    const before = (await context.cookies()).find((c) => c.name === 'switchyard.sid');
    expect(before?.httpOnly).toBe(true);
    expect(before?.sameSite).toBe('Lax');
    await hydrated(page);
    await page.getByTestId('logout').click();
    // The provider asks to confirm its own logout, then sends the browser back.
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await expect(page.getByTestId('signed-out')).toBeVisible();
    // The old session id is dead: replaying it gets 401.
    const replay = await page.request.post('/api/fn/session/whoami', {
      headers: { cookie: `switchyard.sid=${before?.value}` },
    });
    expect(replay.status()).toBe(401);
    // And the provider's session is gone too: visiting the dashboard asks for a login again.
    await page.goto('/');
    await expect(page).toHaveURL(/\/interaction\//);
  });
});

test('a monitor that never finishes is flagged and terminated from the runaway list', async ({ page, request }) => {
  await start(
    request,
    'Monitor',
    { job_id: 'forever', interval_ms: 50, max_interval_ms: 50, timeout_ms: 3600000 },
    'e2e-runaway',
  );
  const row = page.locator('[data-testid="runaway"][data-instance="e2e-runaway"]');
  await expect(async () => {
    await page.goto('/runaways?generations=5');
    await expect(row).toBeVisible();
  }).toPass({ timeout: 20_000 });
  await expect(row).toContainText('generations');
  await hydrated(page);
  await row.getByTestId('terminate-runaway').click();
  await expect(row).toHaveCount(0);
  await page.goto('/instances/e2e-runaway');
  await expect(page.getByTestId('detail-status')).toHaveText('Terminated');
  // The audit log has it, with the user and the fixed reason.
  await page.goto('/audit?action=terminate&target=e2e-runaway');
  const entry = page.getByTestId('audit-row').first();
  await expect(entry).toContainText('alice');
  await expect(entry).toContainText('runaway: terminated from the runaway list');
  await expect(entry).toContainText('ok');
});

test('the overview chart shows throughput after a burst, pushed live without a reload', async ({ page, request }) => {
  await page.goto('/');
  await hydrated(page);
  const total = page.getByTestId('finished-total');
  const before = parseInt((await total.textContent()) ?? '0', 10);
  for (let i = 0; i < 20; i++) {
    await start(request, 'HelloSequence', ['Ada', 'Grace'], `e2e-burst-${i}`);
  }
  // No reload: the numbers arrive over server-sent events.
  await expect(async () => {
    const now = parseInt((await total.textContent()) ?? '0', 10);
    expect(now).toBeGreaterThanOrEqual(before + 20);
  }).toPass({ timeout: 20_000 });
  const max = Number(await page.getByTestId('throughput-chart').getAttribute('data-max'));
  expect(max).toBeGreaterThan(0);
  await expect(page.getByTestId('throughput-chart').locator('polyline').first()).toBeVisible();
  await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });
});

test('screenshots of the instance list, a detail page and the approvals inbox', async ({ page, request }) => {
  await start(request, 'HumanInteraction', { request: 'screenshot', timeout_ms: 600000 }, 'e2e-shot-approval');
  await start(request, 'FanOutFanIn', 12, 'e2e-shot-fan-out');
  await expect(async () => {
    await page.goto('/instances/e2e-shot-fan-out');
    await expect(page.getByTestId('detail-status')).toHaveText('Completed');
  }).toPass({ timeout: 15_000 });
  await expect(page.getByTestId('span').first()).toBeVisible();
  await page.screenshot({ path: join(shots, 'detail.png'), fullPage: true });
  await page.goto('/instances');
  await expect(page.getByTestId('instance-row').first()).toBeVisible();
  await page.screenshot({ path: join(shots, 'instances.png'), fullPage: true });
  await expect(async () => {
    await page.goto('/approvals');
    await expect(page.locator('[data-instance="e2e-shot-approval"]')).toBeVisible();
  }).toPass({ timeout: 15_000 });
  await page.screenshot({ path: join(shots, 'approvals.png'), fullPage: true });
});

test.describe('in dark mode', () => {
  test.use({ colorScheme: 'dark' });

  test('pages follow the system colour scheme and keep focus visible', async ({ page }) => {
    await page.goto('/instances');
    await hydrated(page);
    const luminance = async (selector: string, property: 'backgroundColor' | 'color') => {
      const css = await page.locator(selector).first().evaluate(
        (el, p) => getComputedStyle(el)[p as 'color'],
        property,
      );
      const [r, g, b] = (css.match(/\d+/g) ?? []).map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    expect(await luminance('body', 'backgroundColor')).toBeLessThan(0.2);
    expect(await luminance('h1', 'color')).toBeGreaterThan(0.7);
    // The first Tab reaches the skip link, which becomes visible with a focus outline.
    await page.keyboard.press('Tab');
    const skip = page.locator('.skip-link');
    await expect(skip).toBeFocused();
    expect(await skip.evaluate((el) => getComputedStyle(el).outlineStyle)).toBe('solid');
    await page.keyboard.press('Enter');
    await expect(page.locator('main#main')).toBeFocused();
    await page.screenshot({ path: join(shots, 'instances-dark.png'), fullPage: true });
    await page.goto('/');
    await hydrated(page);
    await page.screenshot({ path: join(shots, 'overview-dark.png'), fullPage: true });
  });
});

test('an admin terminates a filtered set in bulk after a dry run and a typed confirmation', async ({ page, request }) => {
  for (let i = 0; i < 3; i++) {
    await start(request, 'HumanInteraction', { request: `bulk ${i}`, timeout_ms: 600000 }, `e2e-bulk-${i}`);
  }
  await expect(async () => {
    await page.goto('/instances?status=Running&id=e2e-bulk-');
    await expect(page.getByTestId('instance-row')).toHaveCount(3);
  }).toPass({ timeout: 15_000 });
  await hydrated(page);
  await page.getByTestId('bulk').locator('summary').click();
  await page.getByTestId('bulk-action').selectOption('terminate');
  await page.getByTestId('bulk-preview').click();
  await expect(page.getByTestId('bulk-count')).toContainText('3 instances match; 3 can be terminated');
  await page.getByTestId('bulk-reason').fill('cleanup after the e2e run');
  const run = page.getByTestId('bulk-run');
  await expect(run).toBeDisabled();
  await page.getByTestId('bulk-confirm').fill('terminate 2');
  await expect(run).toBeDisabled();
  await page.getByTestId('bulk-confirm').fill('terminate 3');
  await expect(run).toBeEnabled();
  await run.click();
  await expect(page.getByTestId('bulk-progress')).toHaveAttribute('data-finished', 'true');
  await expect(page.getByTestId('bulk-progress')).toContainText('3 of 3 done, 0 failed');
  await page.getByTestId('bulk').screenshot({ path: join(shots, 'bulk.png') });
  // The job is a system instance: linked from the panel, kept out of the default list.
  const job = page.getByTestId('bulk-job');
  await job.click();
  await expect(page.getByText('switchyard.Bulk').first()).toBeVisible();
  await page.goto('/instances');
  await expect(page.getByText('switchyard.Bulk')).toHaveCount(0);
  await expect(async () => {
    await page.goto('/instances?status=Terminated&id=e2e-bulk-');
    await expect(page.getByTestId('instance-row')).toHaveCount(3);
  }).toPass({ timeout: 15_000 });
});

test.describe('as a viewer', () => {
  test.use({ storageState: stateFile('victor') });

  test('a viewer sees no terminate and the server refuses a forged one with 403', async ({ page, browser }) => {
    // An admin starts something the viewer could try to stop.
    const admin = await browser.newContext({ storageState: stateFile('alice') });
    await start(admin.request, 'HumanInteraction', { request: 'viewer test', timeout_ms: 600000 }, 'e2e-viewer');
    await expect(async () => {
      await page.goto('/instances/e2e-viewer');
      await expect(page.getByTestId('detail-status')).toHaveText('Running');
    }).toPass({ timeout: 15_000 });
    await hydrated(page);
    await expect(page.getByTestId('user-role')).toHaveText('viewer');
    await expect(page.getByRole('link', { name: 'API tokens' })).toHaveCount(0);
    await expect(page.getByTestId('terminate')).toHaveCount(0);
    await expect(page.getByTestId('actions')).toHaveCount(0);
    await expect(page.getByTestId('raise')).toHaveCount(0);

    // The same request the button would send, sent from the viewer's session.
    const forged = await page.request.post('/api/fn/instances/act', {
      form: { instance_id: 'e2e-viewer', action: 'Terminate', reason: 'viewer tries' },
    });
    expect(forged.status()).toBe(403);
    expect(await forged.text()).toContain('needs the operator role');
    await page.reload();
    await expect(page.getByTestId('detail-status')).toHaveText('Running');
    await hydrated(page);

    // When an admin terminates it elsewhere, the open page follows without a reload.
    const stopped = await admin.request.post('/api/v1/instances/e2e-viewer/terminate', {
      data: { reason: 'admin stops it' },
    });
    expect(stopped.status(), await stopped.text()).toBe(200);
    await expect(page.getByTestId('detail-status')).toHaveText('Terminated', { timeout: 15_000 });
    await admin.close();
  });

  test('a viewer is told what needs the operator role instead of getting forms that fail', async ({ page, browser }) => {
    const admin = await browser.newContext({ storageState: stateFile('alice') });
    await start(admin.request, 'HumanInteraction', { request: 'viewer inbox', timeout_ms: 600000 }, 'e2e-viewer-inbox');
    await admin.close();
    await page.goto('/start');
    await hydrated(page);
    // The navigation does not offer what the role cannot use.
    const nav = page.getByRole('navigation', { name: 'Primary' });
    await expect(nav.getByRole('link', { name: 'Instances' })).toBeVisible();
    await expect(nav.getByRole('link', { name: 'Start' })).toHaveCount(0);
    await expect(nav.getByRole('link', { name: 'API tokens' })).toHaveCount(0);
    await expect(page.getByTestId('start-operator-only')).toBeVisible();
    await expect(page.getByTestId('start-form')).toHaveCount(0);
    await page.screenshot({ path: join(shots, 'start-viewer.png') });
    // The tokens page says who manages tokens, without a raw refusal beside it.
    await page.goto('/tokens');
    await hydrated(page);
    await expect(page.getByTestId('tokens-admin-only')).toBeVisible();
    await expect(page.getByTestId('tokens-error')).toHaveCount(0);
    await expect(async () => {
      await page.goto('/approvals');
      await expect(page.locator('[data-instance="e2e-viewer-inbox"]')).toBeVisible();
    }).toPass({ timeout: 15_000 });
    await hydrated(page);
    const item = page.locator('[data-instance="e2e-viewer-inbox"]');
    await expect(item.getByTestId('approval-operator-only')).toBeVisible();
    await expect(item.getByTestId('approve')).toHaveCount(0);
    await page.screenshot({ path: join(shots, 'approvals-viewer.png') });
  });
});

test('an admin creates an API token a script uses, then revokes it', async ({ page, playwright }) => {
  await page.goto('/tokens');
  await hydrated(page);
  // No complaint before anything is typed; one once a name is cleared.
  await expect(page.getByTestId('token-problem')).toHaveCount(0);
  await page.getByTestId('token-name').fill('x');
  await page.getByTestId('token-name').fill('');
  await expect(page.getByTestId('token-problem')).toBeVisible();
  await page.getByTestId('token-name').fill('e2e-script');
  await page.getByTestId('token-role').selectOption('operator');
  await page.getByTestId('token-days').fill('7');
  await page.getByTestId('create-token').click();
  const secret = (await page.getByTestId('new-token').textContent()) ?? '';
  expect(secret).toMatch(/^sy_[0-9a-f]{16}_[0-9a-f]{64}$/);
  const row = page.getByTestId('token-row').filter({ hasText: 'e2e-script' });
  await expect(row).toHaveAttribute('data-state', 'active');

  // A script: no cookies, only the bearer token.
  const script = await playwright.request.newContext({
    baseURL: test.info().project.use.baseURL,
    extraHTTPHeaders: { Authorization: `Bearer ${secret}` },
  });
  const started = await script.post('/api/v1/instances', {
    data: { name: 'HelloSequence', input: ['token'], instance_id: 'e2e-token' },
  });
  expect(started.status(), await started.text()).toBe(201);
  const purge = await script.post('/api/v1/instances/e2e-token/purge', { data: { reason: 'not mine' } });
  expect(purge.status()).toBe(403);

  // The audit log names the token; revoking it locks the script out at once.
  await page.goto('/audit?action=start&target=HelloSequence');
  await expect(page.getByTestId('audit-row').first()).toContainText('e2e-script (API token');
  await page.goto('/tokens');
  await hydrated(page);
  await row.getByTestId('revoke-token').click();
  await expect(row).toHaveAttribute('data-state', 'revoked');
  const refused = await script.get('/api/v1/instances');
  expect(refused.status()).toBe(401);
  expect(await refused.text()).toBe('this API token was revoked');
  await script.dispose();
});
