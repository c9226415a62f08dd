// The whole path in a real browser, signed in as an admin through the OIDC provider:
// server-rendered HTML, hydration, server functions, the database, persistence across a reload.
import { expect, test } from '@playwright/test';
import { readFileSync } from 'node:fs';
import { hydrated } from './helpers';

test('server renders the overview before any script runs', async ({ request }) => {
  const response = await request.get('/');
  expect(response.status()).toBe(200);
  const html = await response.text();
  expect(html).toContain('Instances by status');
  expect(html).toContain('data-testid="throughput-chart"');
  // The bundle from its folder named by the content's hash (`cargo xtask build` names it in
  // `build.txt`), and the overview's own chunk preloaded beside the main module.
  expect(html).toMatch(/\/pkg\/[0-9a-f]{16}\/app\.js/);
  expect(html).toMatch(/\/pkg\/[0-9a-f]{16}\/app\.wasm/);
  expect(html).toMatch(/\/pkg\/[0-9a-f]{16}\/app\.css/);
  expect(html).toMatch(/\/pkg\/[0-9a-f]{16}\/split_overview_pages_\d+\.wasm/);
});

test('the bundle comes compressed, and a second load takes every static file from the cache', async ({ page }) => {
  type Seen = { url: string; status?: number; encoding?: string; cached: boolean };
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  let seen = new Map<string, Seen>();
  const isStatic = (url: string) => /\/pkg\/|\/favicon\./.test(new URL(url).pathname);
  cdp.on('Network.requestWillBeSent', (e) => {
    if (isStatic(e.request.url)) seen.set(e.requestId, { url: e.request.url, cached: false });
  });
  cdp.on('Network.requestServedFromCache', (e) => {
    const s = seen.get(e.requestId);
    if (s) s.cached = true;
  });
  cdp.on('Network.responseReceived', (e) => {
    const s = seen.get(e.requestId);
    if (!s) return;
    s.status = e.response.status;
    s.encoding = e.response.headers['content-encoding'] ?? e.response.headers['Content-Encoding'];
    s.cached ||= Boolean(e.response.fromDiskCache || e.response.fromMemoryCache);
  });
  await page.goto('/');
  await hydrated(page);
  const first = [...seen.values()].filter((s) => /\/pkg\/[0-9a-f]{16}\/[^/]+\.(js|wasm|css)$/.test(s.url));
  const kinds = new Set(first.map((s) => s.url.split('.').pop()));
  expect([...kinds].sort()).toEqual(['css', 'js', 'wasm']);
  // The main module and the overview's chunks: more than one wasm file.
  expect(first.filter((s) => s.url.endsWith('.wasm')).length).toBeGreaterThan(1);
  for (const s of first) {
    expect(s.encoding, s.url).toBe('br');
  }
  // The same page again: nothing is downloaded again (served from the cache, or at most a 304).
  seen = new Map();
  await page.goto('/');
  await hydrated(page);
  const again = [...seen.values()];
  expect(again.length).toBeGreaterThan(0);
  expect(again.filter((s) => !s.cached && s.status !== 304), JSON.stringify(again)).toEqual([]);
  // Another page fetches only its own group's modules, and only once.
  await page.goto('/instances');
  await hydrated(page);
  seen = new Map();
  await page.goto('/instances');
  await hydrated(page);
  const second = [...seen.values()];
  expect(second.filter((s) => !s.cached && s.status !== 304), JSON.stringify(second)).toEqual([]);
});

test('navigation shell lists every area and marks the current page', async ({ page }) => {
  await page.goto('/');
  const nav = page.getByTestId('primary-nav');
  for (const area of ['Overview', 'Instances', 'Approvals', 'Runaways', 'Entities', 'Resilience', 'Audit']) {
    await expect(nav.getByRole('link', { name: area })).toBeVisible();
  }
  await expect(nav.getByRole('link', { name: 'Overview' })).toHaveAttribute('aria-current', 'page');
  // An admin's navigation (every area and API tokens) fits one row at 1280 px.
  await page.setViewportSize({ width: 1280, height: 800 });
  await expect(nav.getByRole('link', { name: 'API tokens' })).toBeVisible();
  const tops = await nav.getByRole('link').evaluateAll((links) => links.map((l) => l.getBoundingClientRect().top));
  expect(new Set(tops).size, `link tops ${tops}`).toBe(1);
  await hydrated(page);
  await nav.getByRole('link', { name: 'Approvals' }).click();
  await expect(page).toHaveURL(/\/approvals$/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Approvals');
});

test('unknown paths answer 404 with the not-found page', async ({ request }) => {
  const response = await request.get('/no-such-page');
  expect(response.status()).toBe(404);
  expect(await response.text()).toContain('Page not found');
});

test('a forged cross-site request cannot start an instance', async ({ request }) => {
  const id = `e2e-forged-${Date.now()}`;
  const forged = await request.post('/api/fn/instances/start', {
    headers: { origin: 'http://evil.example' },
    form: { name: 'HelloN', input: '1', instance_id: id },
  });
  expect(forged.status()).toBe(403);
  const lookup = await request.get(`/api/v1/instances/${id}`);
  expect(lookup.status()).toBe(404);
});

test('overview counts link to the instance list filtered by status', async ({ page }) => {
  await page.goto('/');
  const completed = page.getByTestId('count-Completed');
  await expect(completed).toContainText('Completed');
  await hydrated(page);
  await completed.click();
  await expect(page).toHaveURL(/\/instances\?status=Completed$/);
  await expect(page.getByTestId('status-filter').getByRole('link', { name: 'Completed' })).toHaveAttribute(
    'aria-current',
    'page',
  );
  // Whatever earlier tests left behind: only completed instances are listed.
  await expect(page.getByTestId('instance-table').or(page.getByTestId('no-instances'))).toBeVisible();
  for (const row of await page.getByTestId('instance-row').all()) {
    await expect(row).toContainText('Completed');
  }
  // A status-only filter shows its total, and ended runs their duration.
  await expect(page.getByTestId('instance-total')).toContainText(/^\d+ matching instances$/);
  for (const cell of await page.getByTestId('instance-duration').all()) {
    await expect(cell).toHaveText(/^\d+(\.\d+)? (ms|s)$|min|h|d/);
  }
  await page.goto('/instances?status=Sleeping');
  await expect(page.getByTestId('list-error')).toContainText('unknown status');
  await page.goto('/instances?from=yesterday');
  await expect(page.getByTestId('list-error')).toContainText('use YYYY-MM-DD');
});

test('a choice made before the page hydrated is the one started', async ({ page }) => {
  await page.goto('/start');
  await hydrated(page);
  // What a choice made before hydration leaves: the select shows it, but no change event
  // reached the page's state.
  await page.locator('#start-name').evaluate((el: HTMLSelectElement) => {
    el.value = 'HelloN';
  });
  await page.getByTestId('start-input').fill('2');
  await page.getByTestId('start-id').fill('e2e-early-choice');
  await page.getByTestId('start-submit').click();
  await expect(page.getByTestId('start-result')).toContainText('e2e-early-choice');
  await page.goto('/instances/e2e-early-choice');
  await expect(page.getByText('HelloN').first()).toBeVisible();
});

test('start page checks the JSON before submitting and starts a sample', async ({ page }) => {
  await page.goto('/start');
  await hydrated(page);
  const input = page.getByTestId('start-input');
  const submit = page.getByTestId('start-submit');
  await expect(submit).toBeEnabled();
  await page.getByTestId('start-name').selectOption('HelloSequence');
  await input.fill('["Ada", ');
  await expect(page.getByTestId('start-input-problem')).toContainText('not valid JSON');
  await expect(submit).toBeDisabled();
  await input.fill('["Ada", "Grace"]');
  await expect(page.getByTestId('start-input-problem')).toBeEmpty();
  await page.getByTestId('start-id').fill('e2e-hello');
  await submit.click();
  await expect(page.getByTestId('start-result')).toContainText('e2e-hello');

  // It runs to completion and shows up in the list.
  await expect(async () => {
    await page.goto('/instances?status=Completed');
    await expect(page.getByTestId('instance-row').filter({ hasText: 'e2e-hello' })).toBeVisible();
  }).toPass({ timeout: 15_000 });
});

test('an approval arrives in the open inbox, is approved by keyboard, and the instance completes', async ({ page, request }) => {
  // The inbox is open before the instance exists: the approval is pushed in, not reloaded.
  await page.goto('/approvals');
  await hydrated(page);
  const started = await request.post('/api/fn/instances/start', {
    form: {
      name: 'HumanInteraction',
      input: JSON.stringify({ request: 'expense 42', timeout_ms: 600000 }),
      instance_id: 'e2e-approval',
    },
  });
  expect(started.status()).toBe(200);

  const item = page.locator('[data-testid="approval"][data-instance="e2e-approval"]');
  await expect(item).toBeVisible({ timeout: 15_000 });
  // What is asked for, how long it has waited, and a countdown that ticks without a reload.
  await expect(item.getByTestId('approval-request')).toHaveText('expense 42');
  await expect(item.getByTestId('approval-waiting')).toHaveText(/^\d+ s$/);
  // Started through a server function by the signed-in admin (the provider's user "alice").
  await expect(item.getByTestId('approval-started-by')).toHaveText('alice');
  const deadline = item.getByTestId('approval-deadline');
  await expect(deadline).toHaveText(/^in (9|10) min \d+ s$/);
  const first = await deadline.textContent();
  await expect(deadline).not.toHaveText(first ?? '', { timeout: 5_000 });
  await expect(item.getByTestId('approve')).toBeEnabled();
  // Keyboard only: type the comment, Tab to Approve, Enter.
  await item.getByTestId('approval-comment').focus();
  await page.keyboard.type('within budget');
  await page.keyboard.press('Tab');
  await expect(item.getByTestId('approve')).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(item).toHaveCount(0);

  await expect(async () => {
    await page.goto('/instances?status=Completed');
    await expect(page.getByTestId('instance-row').filter({ hasText: 'e2e-approval' })).toBeVisible();
  }).toPass({ timeout: 15_000 });
  await page.goto('/instances/e2e-approval');
  await expect(page.getByTestId('detail-output')).toContainText('within budget');
});

test('a running instance is terminated from its detail page with a reason', async ({ page, request }) => {
  const started = await request.post('/api/fn/instances/start', {
    form: {
      name: 'HumanInteraction',
      input: JSON.stringify({ request: 'laptop', timeout_ms: 600000 }),
      instance_id: 'e2e-detail',
    },
  });
  expect(started.status()).toBe(200);
  await expect(async () => {
    await page.goto('/instances/e2e-detail');
    await expect(page.getByTestId('detail-status')).toHaveText('Running');
  }).toPass({ timeout: 15_000 });
  await hydrated(page);
  await expect(page.getByTestId('history-row').first()).toBeVisible();
  const terminate = page.getByTestId('terminate');
  await expect(terminate).toBeDisabled(); // a reason is required
  await expect(page.getByTestId('action-reason-hint')).toHaveText('Type a reason to enable the actions.');
  await page.getByTestId('action-reason').fill('no longer needed');
  await expect(terminate).toBeEnabled();
  await terminate.click();
  await expect(async () => {
    await page.goto('/instances/e2e-detail');
    await expect(page.getByTestId('detail-status')).toHaveText('Terminated');
  }).toPass({ timeout: 15_000 });
  await expect(page.getByTestId('history')).toContainText('no longer needed');
});

test('the CSV export of a filter downloads exactly the rows the filter matches', async ({ page, request }) => {
  const prefix = `csv-${Date.now()}-`;
  for (let i = 0; i < 3; i++) {
    const started = await request.post('/api/v1/instances', {
      data: { name: 'HelloSequence', input: ['csv'], instance_id: `${prefix}${i}` },
    });
    expect(started.status(), await started.text()).toBe(201);
  }
  await page.goto(`/instances?name=HelloSequence&id=${prefix}`);
  await hydrated(page);
  await expect(page.getByTestId('instance-row')).toHaveCount(3);
  const shown = (await page.getByTestId('instance-row').locator('td:first-child').allTextContents()).sort();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-csv').click()]);
  expect(download.suggestedFilename()).toBe('instances.csv');
  const lines = readFileSync(await download.path(), 'utf8').trim().split('\r\n');
  expect(lines[0]).toBe('instance_id,name,status,created_at,updated_at,completed_at,duration_ms');
  expect(lines.slice(1).map((l) => l.split(',')[0]).sort()).toEqual(shown);
});

test('every sample starts from its prefilled example without editing, and a wrong input is named', async ({ page }) => {
  await page.goto('/start');
  await hydrated(page);
  const select = page.getByTestId('start-name');
  const names = await select.locator('option').evaluateAll((options) => options.map((o) => (o as HTMLOptionElement).value));
  expect(names.length).toBeGreaterThanOrEqual(8);
  const stamp = Date.now();
  for (const name of names) {
    await select.selectOption(name);
    const input = page.getByTestId('start-input');
    await expect(input).not.toHaveValue('null');
    await expect(page.getByTestId('start-input-problem')).toBeEmpty();
    const id = `e2e-example-${name.toLowerCase()}-${stamp}`;
    await page.getByTestId('start-id').fill(id);
    await page.getByTestId('start-submit').click();
    await expect(page.getByTestId('start-result')).toContainText(id);
  }
  // Checked against the input type's schema before anything is sent.
  await select.selectOption('HumanInteraction');
  await page.getByTestId('start-input').fill('{"request": "laptop"}');
  await expect(page.getByTestId('start-input-problem')).toContainText('needs the field "timeout_ms"');
  await expect(page.getByTestId('start-submit')).toBeDisabled();
  await select.selectOption('HelloN');
  await page.getByTestId('start-input').fill('-1');
  await expect(page.getByTestId('start-input-problem')).toContainText('must be at least 0');
});

test('the overview charts have time and value axes, and pointing at one reads its values', async ({ page, request }) => {
  // Something finished in the window, so both charts have values.
  const started = await request.post('/api/v1/instances', {
    data: { name: 'HelloSequence', input: ['chart'], instance_id: `e2e-chart-${Date.now()}` },
  });
  expect(started.status()).toBe(201);
  await page.goto('/');
  await hydrated(page);
  for (const id of ['throughput-chart', 'latency-chart']) {
    const chart = page.getByTestId(id);
    // Clock labels on the time axis (HH:MM), numbers on the value axis starting at 0.
    await expect(chart.locator('text.tick').filter({ hasText: /^\d\d:\d\d$/ }).first()).toBeVisible();
    await expect(chart.locator('text.tick').filter({ hasText: /^0$/ })).toHaveCount(1);
  }
  await expect(page.getByTestId('latency-chart').locator('.legend')).toContainText('p95');
  const chart = page.getByTestId('throughput-chart');
  // Pointing at the last column reads that bucket: its UTC time and each series' value.
  const last = chart.locator('rect.hover-target').last();
  await last.hover();
  await expect(chart.getByTestId('chart-readout')).toHaveText(/^\d\d:\d\d:\d\d UTC — .+: /);
  await expect(chart.locator('line.guide')).toHaveCount(1);
  // And by keyboard: focus the chart, step left.
  await chart.locator('svg').focus();
  const before = await chart.getByTestId('chart-readout').textContent();
  await page.keyboard.press('ArrowLeft');
  await expect(chart.getByTestId('chart-readout')).not.toHaveText(before ?? '');
});

test('keyboard shortcuts move between pages and focus the filter; ? lists them', async ({ page }) => {
  await page.goto('/');
  await hydrated(page);
  const help = page.getByTestId('shortcut-help');
  await expect(help).toBeHidden();
  await page.keyboard.press('?');
  await expect(help).toBeVisible();
  await expect(help).toContainText('Go to instances');
  await page.keyboard.press('Escape');
  await expect(help).toBeHidden();
  await page.keyboard.press('g');
  await page.keyboard.press('i');
  await expect(page).toHaveURL(/\/instances$/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Instances');
  await hydrated(page);
  await page.keyboard.press('/');
  await expect(page.getByTestId('filter-name')).toBeFocused();
  // Typed into a field, the keys are the field's: no navigation.
  await page.keyboard.type('gaHello');
  await expect(page).toHaveURL(/\/instances$/);
  await expect(page.getByTestId('filter-name')).toHaveValue('gaHello');
});

test('list times read relative, with the exact UTC time on hover', async ({ page }) => {
  await page.goto('/instances');
  await hydrated(page);
  const time = page.getByTestId('instance-row').first().locator('time').first();
  await expect(time).toHaveText(/^(just now|\d+ (s|min|h|d) ago)$/);
  await expect(time).toHaveAttribute('title', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  await expect(time).toHaveAttribute('datetime', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
});
