// A viewer, on every page, is offered no control that changes anything: the only buttons are
// the filters' Apply / Filter, Sign out and the shortcut list (reading and navigating stay
// available).
import { expect, test } from '@playwright/test';
import { stateFile } from '../playwright.config';
import { hydrated } from './helpers';

const pages = [
  '/',
  '/instances',
  '/instances/viewer-sweep',
  '/start',
  '/approvals',
  '/runaways',
  '/entities',
  '/entities/%40counter%40viewer-sweep',
  '/resilience',
  '/audit',
  '/tokens',
];

test.beforeAll(async ({ browser }) => {
  const admin = await browser.newContext({ storageState: stateFile('alice') });
  if ((await admin.request.get('/api/v1/instances/viewer-sweep')).status() !== 200) {
    const started = await admin.request.post('/api/v1/instances', {
      data: { name: 'HumanInteraction', input: { request: 'viewer sweep', timeout_ms: 600000 }, instance_id: 'viewer-sweep' },
    });
    expect(started.status(), await started.text()).toBe(201);
  }
  const signalled = await admin.request.post('/api/v1/entities/%40counter%40viewer-sweep/signal', {
    data: { operation: 'add', input: 1 },
  });
  expect(signalled.status(), await signalled.text()).toBe(200);
  await admin.close();
});

test.describe('as a viewer', () => {
  test.use({ storageState: stateFile('victor') });
  for (const path of pages) {
    test(`${path} offers no mutating control`, async ({ page }) => {
      await expect(async () => {
        await page.goto(path);
        await hydrated(page);
        await expect(page.getByTestId('detail-error')).toHaveCount(0);
      }).toPass({ timeout: 15_000 });
      const buttons = await page.locator('button:visible').allTextContents();
      const mutating = buttons.map((b) => b.trim()).filter((b) => !['Apply', 'Filter', 'Sign out', '?'].includes(b));
      expect(mutating, `buttons on ${path}`).toEqual([]);
      await expect(page.locator('textarea:visible')).toHaveCount(0);
    });
  }
});
