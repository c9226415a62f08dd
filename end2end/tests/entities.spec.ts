// Durable entities in the dashboard: an operator signals the counter from its page and sees the
// state rise without a reload; bad input gets a message on the page; delete asks for a typed
// confirmation; a viewer gets no signal form and a forged signal is refused with 403; the list
// and the detail pass axe-core; screenshots of both, light and dark.
import AxeBuilder from '@axe-core/playwright';
import { type APIRequestContext, type Page, expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { stateFile } from '../playwright.config';
import { hydrated } from './helpers';

const shots = join(__dirname, '..', 'screenshots');
mkdirSync(shots, { recursive: true });

async function signal(request: APIRequestContext, id: string, operation: string, input: unknown) {
  const response = await request.post(`/api/v1/entities/${id}/signal`, { data: { operation, input } });
  expect(response.status(), await response.text()).toBe(200);
}

/** Opens an entity's page once its first operation has run. */
async function openEntity(page: Page, id: string) {
  await expect(async () => {
    await page.goto(`/entities/${encodeURIComponent(id)}`);
    await expect(page.getByTestId('entity-state')).toBeVisible();
  }).toPass({ timeout: 15_000 });
  await hydrated(page);
}

async function axeClean(page: Page) {
  const results = await new AxeBuilder({ page }).analyze();
  expect(
    results.violations.map((v) => `${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
  ).toEqual([]);
}

test('an operator signals the counter from its page and sees the state rise without a reload', async ({ page, request }) => {
  await signal(request, '@counter@e2e-signal', 'add', 1);
  await openEntity(page, '@counter@e2e-signal');
  const state = page.getByTestId('entity-state');
  await expect(state).toContainText('"value": 1');
  await page.getByTestId('signal-operation').selectOption('add');
  await page.getByTestId('signal-input').fill('5');
  await page.getByTestId('signal-send').click();
  await expect(page.getByTestId('signal-result')).toBeVisible();
  await expect(state).toContainText('"value": 6', { timeout: 15_000 });
  // A signal from elsewhere shows up too, over the live channel.
  await signal(request, '@counter@e2e-signal', 'add', 10);
  await expect(state).toContainText('"value": 16', { timeout: 15_000 });
  await expect(page.getByTestId('entity-recent').locator('tbody tr')).toHaveCount(3);
  // Bad input is refused with a message on the page, not a failed operation out of sight.
  await page.getByTestId('signal-input').fill('{not json');
  await page.getByTestId('signal-send').click();
  await expect(page.getByTestId('signal-error')).toContainText('not valid JSON');
  await page.getByTestId('signal-input').fill('"ten"');
  await page.getByTestId('signal-send').click();
  await expect(page.getByTestId('signal-error')).toContainText('invalid input');
  await axeClean(page);
  await page.screenshot({ path: join(shots, 'entity-detail.png'), fullPage: true });

  for (let i = 0; i < 3; i++) {
    await signal(request, `@account@e2e-${i}`, 'deposit', 100 * (i + 1));
  }
  await expect(async () => {
    await page.goto('/entities?name=account&key=e2e-');
    await expect(page.getByTestId('entity-row')).toHaveCount(3);
  }).toPass({ timeout: 15_000 });
  await expect(page.getByTestId('entity-total')).toHaveText('3 entities match.');
  await hydrated(page);
  await axeClean(page);
  await page.goto('/entities');
  await expect(page.getByTestId('entity-row').first()).toBeVisible();
  await page.screenshot({ path: join(shots, 'entities.png'), fullPage: true });
  // An unknown type in the URL is a message, not a 500.
  await page.goto('/entities?name=nosuch');
  await expect(page.getByTestId('entity-list-error')).toContainText('no entity type named');
});

test('delete asks for the typed id, then the entity is gone', async ({ page, request }) => {
  await signal(request, '@counter@e2e-delete', 'add', 3);
  await openEntity(page, '@counter@e2e-delete');
  const remove = page.getByTestId('entity-delete');
  await page.getByTestId('admin-reason').fill('e2e cleanup');
  await expect(remove).toBeDisabled();
  await page.getByTestId('admin-confirm').fill('@counter@e2e-delet');
  await expect(remove).toBeDisabled();
  await page.getByTestId('admin-confirm').fill('@counter@e2e-delete');
  await expect(remove).toBeEnabled();
  await remove.click();
  await expect(page.getByTestId('admin-result')).toContainText('is being deleted');
  await expect(page.getByTestId('entity-error')).toContainText('not found', { timeout: 15_000 });
  await page.goto('/audit?action=purge-entity&target=@counter@e2e-delete');
  await expect(page.getByTestId('audit-row').first()).toContainText('e2e cleanup');
});

test.describe('in dark mode', () => {
  test.use({ colorScheme: 'dark' });

  test('the entity pages in dark mode', async ({ page, request }) => {
    await signal(request, '@counter@e2e-dark', 'add', 42);
    await openEntity(page, '@counter@e2e-dark');
    await axeClean(page);
    await page.screenshot({ path: join(shots, 'entity-detail-dark.png'), fullPage: true });
    await page.goto('/entities');
    await hydrated(page);
    await axeClean(page);
    await page.screenshot({ path: join(shots, 'entities-dark.png'), fullPage: true });
  });
});

test.describe('as a viewer', () => {
  test.use({ storageState: stateFile('victor') });

  test('a viewer cannot signal, and a forged signal is refused with 403', async ({ page, browser }) => {
    const admin = await browser.newContext({ storageState: stateFile('alice') });
    await signal(admin.request, '@counter@e2e-viewer', 'add', 2);
    await admin.close();
    await openEntity(page, '@counter@e2e-viewer');
    await expect(page.getByTestId('entity-operator-only')).toBeVisible();
    await expect(page.getByTestId('entity-signal')).toHaveCount(0);
    await expect(page.getByTestId('entity-admin')).toHaveCount(0);
    const forged = await page.request.post('/api/fn/entities/signal', {
      form: { entity_id: '@counter@e2e-viewer', operation: 'add', input: '1000' },
    });
    expect(forged.status()).toBe(403);
    expect(await forged.text()).toContain('needs the operator role');
    const api = await page.request.post('/api/v1/entities/@counter@e2e-viewer/signal', {
      data: { operation: 'add', input: 1000 },
    });
    expect(api.status()).toBe(403);
    await page.reload();
    await expect(page.getByTestId('entity-state')).toContainText('"value": 2');
  });
});
