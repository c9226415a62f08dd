// Local mode: no issuer configured, loopback only, everyone is the local administrator.
import { expect, test } from '@playwright/test';

test('local mode needs no login and says so on every page', async ({ page }) => {
  await page.goto('/instances');
  await expect(page).toHaveURL(/\/instances$/);
  await expect(page.getByTestId('local-mode-banner')).toContainText('Local mode');
  await expect(page.getByTestId('user-role')).toHaveText('admin');
  await expect(page.getByTestId('logout')).toHaveCount(0);
});
