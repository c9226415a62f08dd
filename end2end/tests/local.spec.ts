// Local mode: no issuer configured, loopback only, everyone is the local administrator.
import { expect, test } from '@playwright/test';

test('local mode needs no login and says so on every page', async ({ page }) => {
  await page.goto('/instances');
  await expect(page).toHaveURL(/\/instances$/);
  await expect(page.getByTestId('local-mode-banner')).toContainText('Local mode');
  await expect(page.getByTestId('user-role')).toHaveText('admin');
  await expect(page.getByTestId('logout')).toHaveCount(0);
});

test('a full start intake answers 429 with Retry-After (load levelling)', async ({ request }) => {
  // This server runs with --max-live-instances 3: three approvals that wait fill it.
  const start = { name: 'HumanInteraction', input: { request: 'intake', timeout_ms: 600000 } };
  for (let i = 0; i < 3; i++) {
    const ok = await request.post('/api/v1/instances', { data: start });
    expect(ok.status(), await ok.text()).toBe(201);
  }
  const refused = await request.post('/api/v1/instances', { data: start });
  expect(refused.status()).toBe(429);
  const retryAfter = Number(refused.headers()['retry-after']);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  expect((await refused.json()).error).toBe('overloaded');
});
