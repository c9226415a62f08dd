// Signs each test user in through the real OIDC provider once and saves the browser state
// (the session cookie), so specs start signed in as the role they need.
import { expect, test as setup } from '@playwright/test';
import { stateFile, users } from '../playwright.config';
import { signIn } from './helpers';

for (const user of users) {
  setup(`sign in as ${user}`, async ({ page }) => {
    await signIn(page, user);
    await expect(page.getByTestId('user-name')).toHaveText(user);
    await page.context().storageState({ path: stateFile(user) });
  });
}
