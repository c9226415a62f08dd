// The sign-in flow's own page, served outside the app to people without a session: axe-core
// finds no critical or serious violation in light or dark, and it is photographed.
import AxeBuilder from '@axe-core/playwright';
import { expect, test } from '@playwright/test';
import { join } from 'node:path';

const shots = join(__dirname, '..', 'screenshots');

// The sign-in flow's own page (served outside the app, to people without a session).
for (const scheme of ['light', 'dark'] as const) {
  test.describe(`signed out, in ${scheme}`, () => {
    test.use({ colorScheme: scheme, storageState: { cookies: [], origins: [] } });
    test('the signed-out page has no serious accessibility violation', async ({ page }) => {
      await page.goto('/auth/signed-out');
      await expect(page.getByTestId('signed-out')).toBeVisible();
      const results = await new AxeBuilder({ page }).analyze();
      const serious = results.violations.filter((v) => v.impact === 'critical' || v.impact === 'serious');
      expect(serious.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
      await page.screenshot({ path: join(shots, `page-signed-out-${scheme}.png`), fullPage: true });
    });
  });
}
