// How long the overview takes to become interactive on a modest link: Chromium throttled to
// 20 Mbit/s both ways with 40 ms round trips, a cold cache each run (a fresh browser context),
// from navigation start until the page has hydrated (the layout marks its header). Three runs;
// prints each, the median, and what was transferred. A figure, not a pass/fail timing.
import { test } from '@playwright/test';

const RUNS = 3;
const MBIT = 1_000_000 / 8;

test('overview hydration on 20 Mbit/s with 40 ms RTT, cold cache', async ({ browser }) => {
  const runs: { ms: number; bytes: number; requests: number; wasm: number }[] = [];
  for (let i = 0; i < RUNS; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 40,
      downloadThroughput: 20 * MBIT,
      uploadThroughput: 20 * MBIT,
    });
    let bytes = 0;
    let requests = 0;
    let wasm = 0;
    const urls = new Map<string, string>();
    cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, e.request.url));
    cdp.on('Network.loadingFinished', (e) => {
      bytes += e.encodedDataLength;
      requests += 1;
      if (urls.get(e.requestId)?.endsWith('.wasm')) wasm += 1;
    });
    await page.goto('/', { waitUntil: 'commit' });
    await page.waitForFunction(
      () => document.querySelector('header.site-header')?.getAttribute('data-hydrated') === 'true',
      undefined,
      { polling: 'raf', timeout: 60_000 },
    );
    const ms = await page.evaluate(() => performance.now());
    runs.push({ ms, bytes, requests, wasm });
    console.log(
      `run ${i + 1}: hydrated after ${ms.toFixed(0)} ms; ${requests} requests (${wasm} wasm modules), ` +
        `${(bytes / 1024).toFixed(0)} KB transferred`,
    );
    await context.close();
  }
  const sorted = runs.map((r) => r.ms).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(
    `overview hydration, 20 Mbit/s, 40 ms RTT, cold cache: median of ${RUNS} ${median.toFixed(0)} ms ` +
      `(runs ${runs.map((r) => r.ms.toFixed(0)).join(', ')} ms; target 1500 ms)`,
  );
});
