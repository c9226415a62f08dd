// Shared steps for the specs.
import { type Page, expect } from '@playwright/test';

/** Signs in through the provider's login form, starting from `next` (default: the overview). */
export async function signIn(page: Page, user: string, next = '/') {
  await page.goto(next);
  // Not signed in: Switchyard redirects to the provider's login form.
  await expect(page).toHaveURL(/127\.0\.0\.1:\d+\/interaction\//);
  await page.locator('input[name="login"]').fill(user);
  await page.locator('input[name="password"]').fill('any password');
  await page.getByRole('button', { name: 'Sign-in' }).click();
}

/** Waits until the page's wasm has hydrated (the layout marks its header). */
export async function hydrated(page: Page) {
  await expect(page.locator('header.site-header')).toHaveAttribute('data-hydrated', 'true');
}
