// Resilience in the dashboard: the flaky sample opens its breaker and the page shows it open
// without a reload; an operator resets it with a reason and the page shows it closed; a burst
// through the limiter shows waiters and refusals; a viewer sees no control and forged resets get
// 403; axe-core is clean; screenshots in light and dark with a breaker open and a limiter under
// load.
import AxeBuilder from '@axe-core/playwright';
import { type APIRequestContext, type Page, expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { stateFile } from '../playwright.config';
import { hydrated } from './helpers';

const shots = join(__dirname, '..', 'screenshots');
mkdirSync(shots, { recursive: true });

async function post(request: APIRequestContext, path: string, data: unknown, expected = 200) {
  const response = await request.post(path, { data });
  expect(response.status(), await response.text()).toBe(expected);
  return response.json();
}

async function setFailure(request: APIRequestContext, percent: number) {
  await post(request, '/api/v1/resilience/samples/flaky', { failure_percent: percent });
}

async function start(request: APIRequestContext, name: string, input: unknown) {
  await post(request, '/api/v1/instances', { name, input }, 201);
}

async function axeClean(page: Page) {
  const results = await new AxeBuilder({ page }).analyze();
  expect(
    results.violations.map((v) => `${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
  ).toEqual([]);
}

// Waits until the page shows a newer snapshot than the one on it now.
async function nextPublish(page: Page) {
  const intake = page.getByTestId('intake').first();
  const before = (await intake.textContent()) ?? '';
  await expect(intake).not.toHaveText(before, { timeout: 5_000 });
}

const breaker = (page: Page) => page.locator('[data-testid="breaker"][data-breaker="flaky-dependency"]');
const limiter = (page: Page) => page.locator('[data-testid="limiter"][data-limiter="burst-limiter"]');

test('the flaky sample opens its breaker live, and an operator resets it with a reason', async ({ page, request }) => {
  await post(request, '/api/v1/resilience/breakers/flaky-dependency/reset', { reason: 'e2e: start closed' });
  await page.goto('/resilience');
  await hydrated(page);
  await expect(breaker(page).getByTestId('breaker-status')).toHaveText('closed');
  // The dependency goes down; twenty calls fail and trip the breaker, with no reload here.
  await setFailure(request, 100);
  await start(request, 'FlakyCalls', 20);
  await expect(breaker(page).getByTestId('breaker-status')).toHaveText('open', { timeout: 15_000 });
  await expect(breaker(page).getByTestId('half-open-in')).toContainText('A probe may go in');
  await expect(breaker(page).getByTestId('transitions')).toContainText('failure rate');
  // A burst through the limiter: five at once, then five a second; the rest wait.
  await start(request, 'LimiterBurst', 80);
  await expect(async () => {
    const waiting = Number(await limiter(page).getByTestId('limiter-waiters').textContent());
    expect(waiting).toBeGreaterThan(0);
  }).toPass({ timeout: 15_000 });
  await axeClean(page);
  await page.screenshot({ path: join(shots, 'resilience.png'), fullPage: true });
  // A failure rate out of range is a message on the page, not a silent no-op.
  for (const bad of ['-5', '18446744073709551615', '101']) {
    await page.getByTestId('flaky-input').fill(bad);
    await page.getByTestId('flaky-apply').click();
    await expect(page.getByTestId('flaky-error')).toContainText('from 0 to 100');
  }
  // The message and what was typed outlive the next pushed snapshot.
  await nextPublish(page);
  await expect(page.getByTestId('flaky-error')).toContainText('from 0 to 100');
  await expect(page.getByTestId('flaky-input')).toHaveValue('101');
  // The dependency recovers; the operator resets the breaker, giving a reason.
  await setFailure(request, 0);
  const actions = breaker(page).getByTestId('breaker-actions');
  await expect(actions.getByTestId('breaker-reset')).toBeDisabled();
  await actions.getByTestId('breaker-reason').fill('e2e: the dependency is back');
  // A reason being typed is not wiped by the refresh every second.
  await nextPublish(page);
  await expect(actions.getByTestId('breaker-reason')).toHaveValue('e2e: the dependency is back');
  await actions.getByTestId('breaker-reset').click();
  await expect(breaker(page).getByTestId('breaker-status')).toHaveText('closed', { timeout: 15_000 });
  await expect(breaker(page).getByTestId('transitions')).toContainText('the dependency is back');
  // Audited, with the reason.
  await page.goto('/audit');
  await expect(page.getByText('breaker.reset').first()).toBeVisible();
  // Refusals past the limiter's 10 s wait show as refused.
  await page.goto('/resilience');
  await expect(async () => {
    const refused = Number(await limiter(page).getByTestId('limiter-refused').textContent());
    expect(refused).toBeGreaterThan(0);
  }).toPass({ timeout: 20_000 });
  await page.goto('/');
  await expect(page.getByTestId('intake-pressure')).toContainText('live instances');
});

test.describe('in dark mode', () => {
  test.use({ colorScheme: 'dark' });

  test('the Resilience page with a breaker open and a limiter under load', async ({ page, request }) => {
    await setFailure(request, 100);
    await post(request, '/api/v1/resilience/breakers/flaky-dependency/force-open', { reason: 'e2e: dark screenshot' });
    await start(request, 'LimiterBurst', 60);
    await page.goto('/resilience');
    await hydrated(page);
    await expect(breaker(page).getByTestId('breaker-status')).toHaveText('forced open');
    await expect(async () => {
      const admitted = Number(await limiter(page).getByTestId('limiter-admitted').textContent());
      const waiting = Number(await limiter(page).getByTestId('limiter-waiters').textContent());
      expect(admitted).toBeGreaterThan(0);
      expect(waiting).toBeGreaterThan(0);
    }).toPass({ timeout: 15_000 });
    await axeClean(page);
    await page.screenshot({ path: join(shots, 'resilience-dark.png'), fullPage: true });
    await post(request, '/api/v1/resilience/breakers/flaky-dependency/reset', { reason: 'e2e: done' });
    await setFailure(request, 10);
  });
});

test.describe('as a viewer', () => {
  test.use({ storageState: stateFile('victor') });

  test('a viewer sees the breakers but no control, and a forged reset gets 403', async ({ page }) => {
    await page.goto('/resilience');
    await hydrated(page);
    await expect(breaker(page)).toBeVisible();
    await expect(page.getByTestId('breaker-actions')).toHaveCount(0);
    await expect(page.getByTestId('flaky-input')).toHaveCount(0);
    const forged = await page.request.post('/api/fn/resilience/breaker', {
      form: { name: 'flaky-dependency', action: 'force-open', reason: 'forged' },
    });
    expect(forged.status()).toBe(403);
    expect(await forged.text()).toContain('needs the operator role');
    const api = await page.request.post('/api/v1/resilience/breakers/flaky-dependency/force-open', {
      data: { reason: 'forged' },
    });
    expect(api.status()).toBe(403);
    await page.reload();
    await expect(breaker(page).getByTestId('breaker-status')).not.toHaveText('forced open');
  });
});
