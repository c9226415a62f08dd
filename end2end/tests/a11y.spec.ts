// Every page, in light and in dark, as an admin (who sees every control): axe-core finds no
// critical or serious violation, and each page is photographed for review
// (`screenshots/page-<name>-<scheme>.png`, not committed).
import AxeBuilder from '@axe-core/playwright';
import { type Page, expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { hydrated } from './helpers';

const shots = join(__dirname, '..', 'screenshots');
mkdirSync(shots, { recursive: true });

/** Pages by name; the instance and entity pages use what `beforeAll` creates. */
const pages: [string, string][] = [
  ['overview', '/'],
  ['instances', '/instances'],
  ['instance', '/instances/a11y-approval'],
  ['instance-completed', '/instances/a11y-hello'],
  ['start', '/start'],
  ['approvals', '/approvals'],
  ['runaways', '/runaways'],
  ['entities', '/entities'],
  ['entity', '/entities/%40counter%40a11y'],
  ['resilience', '/resilience'],
  ['audit', '/audit'],
  ['tokens', '/tokens'],
  ['not-found', '/no-such-page'],
];

async function seriousViolations(page: Page) {
  const results = await new AxeBuilder({ page }).analyze();
  return results.violations
    .filter((v) => v.impact === 'critical' || v.impact === 'serious')
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

test.beforeAll(async ({ request }) => {
  for (const [name, input, id] of [
    ['HumanInteraction', { request: 'a11y laptop', timeout_ms: 600000 }, 'a11y-approval'],
    ['HelloSequence', ['Ada', 'Grace'], 'a11y-hello'],
  ] as const) {
    // Once per worker: a worker that restarts after a failure finds them there.
    if ((await request.get(`/api/v1/instances/${id}`)).status() === 200) continue;
    const started = await request.post('/api/v1/instances', { data: { name, input, instance_id: id } });
    expect(started.status(), await started.text()).toBe(201);
  }
  const signalled = await request.post('/api/v1/entities/%40counter%40a11y/signal', {
    data: { operation: 'add', input: 3 },
  });
  expect(signalled.status(), await signalled.text()).toBe(200);
});

for (const scheme of ['light', 'dark'] as const) {
  test.describe(`in ${scheme}`, () => {
    test.use({ colorScheme: scheme });
    for (const [name, path] of pages) {
      test(`${name} has no serious accessibility violation`, async ({ page }) => {
        await expect(async () => {
          await page.goto(path);
          await hydrated(page);
          // The instance and entity pages exist once their first work is committed.
          await expect(page.getByTestId('detail-error')).toHaveCount(0);
        }).toPass({ timeout: 15_000 });
        expect(await seriousViolations(page)).toEqual([]);
        await page.screenshot({ path: join(shots, `page-${name}-${scheme}.png`), fullPage: true });
      });
    }
  });
}

