// Browser test of scepd's admin GUI (/ui/scep): playwright-core drives Debian's chromium
// against a running scepd. tests/tests/gui.rs starts the server, makes the enrolments this
// script expects, and runs it with:
//
//   SCEPD_URL     http://127.0.0.1:<port>
//   ADMIN_KEY     an admin API key; READER_KEY a reader key
//   BUNDLE_PATH   the Intune profile's Connector bundle (corrupted, then restored, here)
//   HOSTILE_CN    a subject CN made of HTML that must be shown as text
//   SCREENSHOTS   optional: a directory for one screenshot per tab
//
// Exit status 0 when every check passed; the first failure is printed with the page's state.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL_BASE = env('SCEPD_URL');
const ADMIN_KEY = env('ADMIN_KEY');
const READER_KEY = env('READER_KEY');
const BUNDLE_PATH = env('BUNDLE_PATH');
const HOSTILE_CN = env('HOSTILE_CN');
const SCREENSHOTS = process.env.SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = 15_000;
/** A value as scepd renders it in a subject (RFC 4514 §2.4 escaping). */
const rfc4514 = (value) => value.replace(/["+,;<>\\]/g, (c) => `\\${c}`);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  timeout: 60_000,
});

// Uncaught exceptions and policy violations fail the test; 400/401/403/500 answers the test
// provokes on purpose are logged by chromium as "Failed to load resource" and are expected.
const problems = [];
let step = 'start';
const check = async (name, fn) => {
  step = name;
  await fn();
  console.log(`ok - ${name}`);
};

try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (400|401|403|500)/.test(text)) {
      problems.push(`console error: ${text}`);
    }
  });
  // Fake timers, so the 30 s / 60 s polling can be checked without waiting for it.
  await page.clock.install();
  const visible = (sel) => page.locator(sel).waitFor({ state: 'visible' });
  const hidden = (sel) => page.locator(sel).waitFor({ state: 'hidden' });
  const shot = async (name) => {
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
  };
  const signIn = async (key) => {
    await page.fill('#api-key', key);
    await page.click('#sign-in-form button[type=submit]');
  };

  await check('/ui/ redirects to the page, which asks for a key and carries the security headers', async () => {
    const res = await page.goto(`${URL_BASE}/ui/`);
    assert.equal(new URL(page.url()).pathname, '/ui/scep');
    assert.equal(res.status(), 200);
    const h = res.headers();
    assert.match(h['content-security-policy'], /default-src 'none'; script-src 'self'/);
    assert.equal(h['x-frame-options'], 'DENY');
    assert.equal(h['x-content-type-options'], 'nosniff');
    await visible('#sign-in');
    assert.equal(await page.isHidden('#app'), true);
  });

  await check('an unknown key is refused and the sign-in form says so', async () => {
    await signIn('not-a-configured-key-0000');
    await visible('#sign-in-error');
    assert.match(await page.textContent('#sign-in-error'), /not accepted/);
    assert.equal(await page.isHidden('#app'), true);
  });

  await check('a key that cannot be a header is refused before it is sent', async () => {
    await signIn('ключ-ключ-ключ-ключ');
    await visible('#sign-in-error');
    assert.match(await page.textContent('#sign-in-error'), /visible ASCII/);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  await check('a reader key hides the page and asks for an admin key', async () => {
    await signIn(READER_KEY);
    await visible('#forbidden');
    assert.match(await page.textContent('#forbidden-message'), /admin role/);
    assert.equal(await page.isHidden('#app'), true);
    await page.click('#forbidden-sign-out');
    await visible('#sign-in');
  });

  await check('Profiles tab: one card per profile with RA expiry, mTLS, Intune and challenge badges', async () => {
    await signIn(ADMIN_KEY);
    await visible('#view-profiles [data-profile="corp"]');
    assert.equal(await page.getAttribute('#tab-profiles', 'aria-current'), 'page');
    const names = await page.$$eval('#profile-cards [data-profile]', (cards) => cards.map((c) => c.dataset.profile));
    assert.deepEqual(names, ['corp', 'intune-api', 'otp', 'plain']);
    const apiCard = await page.locator('#profile-cards [data-profile="intune-api"]').textContent();
    assert.match(apiCard, /Intune API mode/);
    assert.doesNotMatch(apiCard, /Intune disabled|challenge password/);
    const corp = page.locator('#profile-cards [data-profile="corp"]');
    const corpText = await corp.textContent();
    assert.match(corpText, /Intune enabled/);
    assert.match(corpText, /challenge password set/);
    assert.match(corpText, new RegExp(`${URL_BASE}/scep/corp`));
    assert.match(corpText, /CN=scepd RA/);
    assert.equal(await corp.locator('.badge.green', { hasText: 'days left' }).count(), 2, 'RA and CA expiry badges');
    // corp is the default profile, so it also serves NDES's URL.
    assert.match(corpText, new RegExp(`URL aliases${URL_BASE}/certsrv/mscep/mscep\\.dll`));
    assert.doesNotMatch(corpText, /Encryption RA certificate/);
    const plainCard = page.locator('#profile-cards [data-profile="plain"]');
    const plain = await plainCard.textContent();
    assert.match(plain, /Intune disabled/);
    // NDES's RA arrangement: the signing and the encryption RA certificate, each with its expiry.
    assert.match(plain, /Signing RA certificateCN=scepd RA signing/);
    assert.match(plain, /Encryption RA certificateCN=scepd RA encryption/);
    assert.doesNotMatch(plain, /URL aliases/);
    assert.equal(await plainCard.locator('.badge.green', { hasText: 'days left' }).count(), 3, 'two RAs and the CA');
    assert.equal(await page.locator('#profile-cards [data-profile="plain"] a.nav').count(), 0);
    assert.equal(await page.locator('#profile-cards [data-profile="plain"] button.new-challenge').count(), 0);
    assert.match(await page.locator('#profile-cards [data-profile="otp"]').textContent(), /one-time challenges/);
    await shot('profiles');
  });

  await check('"New challenge" on a one-time profile mints one and shows it once, as text', async () => {
    await page.click('#profile-cards [data-profile="otp"] button.new-challenge');
    await visible('#challenge-dialog');
    assert.match(await page.textContent('#challenge-profile-text'), /profile otp/);
    await page.fill('#challenge-ttl', '5');
    await page.fill('#challenge-cn', 'gui-device');
    const minted = page.waitForResponse((r) => r.url().endsWith('/api/v1/admin/scep/challenges'));
    await page.click('#challenge-mint');
    const answer = await minted;
    assert.equal(answer.status(), 201);
    const body = await answer.json();
    await visible('#challenge-result');
    const shown = await page.textContent('#challenge-value');
    assert.match(shown, /^[0-9A-F]{32}$/);
    assert.equal(shown, body.challenge);
    assert.match(await page.textContent('#challenge-expires'), /^\d{4}-\d\d-\d\dT/);
    assert.equal(await page.isVisible('#challenge-copy'), true);
    await shot('new-challenge');
    await page.click('#challenge-cancel');
    await hidden('#challenge-dialog');
    assert.equal(await page.textContent('#challenge-value'), '', 'closing forgets the challenge');
    // The server lists it as outstanding, bound to the CN, for 5 minutes, minted by the key "ops".
    const list = await page.evaluate(async ([base, key]) => {
      const r = await fetch(`${base}/api/v1/admin/scep/challenges?profile=otp`, { headers: { Authorization: `Bearer ${key}` } });
      return r.json();
    }, [URL_BASE, ADMIN_KEY]);
    assert.equal(list.challenges.length, 1);
    assert.equal(list.challenges[0].binding.common_name, 'gui-device');
    assert.equal(list.challenges[0].created_by, 'ops');
    assert.equal(JSON.stringify(list).includes(shown), false, 'the list never shows the secret');
    const ttl = (Date.parse(list.challenges[0].expires_at) - Date.parse(list.challenges[0].created_at)) / 1000;
    assert.equal(ttl, 300);
  });

  await check('a refused mint (bad binding) is shown in the dialog, which stays open', async () => {
    await page.click('#profile-cards [data-profile="otp"] button.new-challenge');
    await page.fill('#challenge-sans', 'x400:nope');
    await page.click('#challenge-mint');
    await visible('#challenge-error');
    assert.match(await page.textContent('#challenge-error'), /subject_alt_names/);
    assert.equal(await page.isVisible('#challenge-result'), false);
    await page.click('#challenge-cancel');
    await hidden('#challenge-dialog');
  });

  await check('"View Intune details" opens the Intune tab filtered to the profile', async () => {
    await page.click('#profile-cards [data-profile="corp"] a.nav');
    await visible('#intune-cards [data-profile="corp"] [data-counter="success"]');
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('tab'), 'intune');
    assert.equal(url.searchParams.get('profile'), 'corp');
    assert.equal(await page.getAttribute('#tab-intune', 'aria-current'), 'page');
    assert.equal(await page.locator('#intune-cards [data-profile]').count(), 1);
    assert.match(await page.textContent('#intune-filter'), /Showing profile corp/);
  });

  const counter = async (label) =>
    Number((await page.textContent(`#intune-cards [data-profile="corp"] [data-counter="${label}"] .n`)).replace(/,/g, ''));

  await check('Intune tab: counters in the spec order, anchors with expiry badges, table usage', async () => {
    const order = await page.$$eval('#intune-cards [data-profile="corp"] [data-counter]', (cs) => cs.map((c) => c.dataset.counter));
    assert.deepEqual(order, ['success', 'malformed', 'signature_invalid', 'unknown_version', 'not_yet_valid', 'expired',
      'wrong_audience', 'claim_mismatch', 'replay', 'rate_limited', 'compliance_failed', 'replay_cache_full']);
    assert.equal(await counter('success'), 2);
    assert.equal(await counter('replay'), 1);
    assert.equal(await counter('claim_mismatch'), 1);
    assert.equal(await counter('expired'), 0);
    assert.match(await page.getAttribute('#intune-cards [data-counter="replay"]', 'class'), /failing/);
    const card = await page.textContent('#intune-cards [data-profile="corp"]');
    assert.match(card, /Microsoft Intune Certificate Connector/);
    assert.match(card, /ES256/);
    assert.match(card, /https:\/\/scep\.example\.test\/scep\/corp/);
    assert.match(card, /3 per device per 1 d/);
    assert.match(card, /2 of 100,000 nonces/);
    assert.equal(await page.locator('#intune-cards .anchors .badge.green').count(), 1);
  });

  await check('Intune tab: the recent failures table lists refused requests only, newest first', async () => {
    const outcomes = await page.$$eval('#failures tbody tr', (rows) => rows.map((r) => r.cells[3].textContent));
    assert.deepEqual(outcomes, ['claim_mismatch', 'replay']);
    // The refused CSR's CN is markup: shown as text in the subject and the detail.
    const mismatch = await page.$$eval('#failures tbody tr', (rows) => [...rows[0].cells].map((c) => c.textContent));
    assert.equal(mismatch[5], `CN=${rfc4514(HOSTILE_CN)}`);
    assert.ok(mismatch[8].includes('<img src=x onerror=') && mismatch[8].includes('<b>dev</b>'), mismatch[8]);
    assert.equal(await page.locator('#failures img, #failures b, #failures script').count(), 0);
    const ids = await page.$$eval('#failures tbody tr', (rows) => rows.map((r) => Number(r.dataset.id)));
    assert.ok(ids[0] > ids[1], `newest first: ${ids}`);
    const replay = await page.$$eval('#failures tbody tr', (rows) => [...rows[1].cells].map((c) => c.textContent));
    assert.equal(replay[2], 'PKCSReq');
    assert.equal(replay[4], 'device-guid-1');
    assert.equal(replay[6], 'connector-installation-1');
    await shot('intune');
  });

  await check('counters are polled every 30 s and the failures table every 60 s, on that tab only', async () => {
    const seen = { stats: 0, failures: 0 };
    const count = (r) => {
      if (r.url().endsWith('/api/v1/admin/scep/intune/stats')) seen.stats++;
      if (r.url().includes('/api/v1/admin/scep/events?') && r.url().includes('exclude_outcome=success')) seen.failures++;
    };
    page.on('request', count);
    // Each poll is awaited through its answer, so the counts below are settled.
    const polled = (what) => page.waitForResponse((r) => r.url().includes(what));
    let stats = polled('/intune/stats');
    await page.clock.runFor(30_500);
    await stats;
    assert.deepEqual(seen, { stats: 1, failures: 0 }, 'after 30 s');
    stats = polled('/intune/stats');
    const failures = polled('exclude_outcome=success');
    await page.clock.runFor(30_000);
    await Promise.all([stats, failures]);
    assert.deepEqual(seen, { stats: 2, failures: 1 }, 'after 60 s');
    // Leaving the tab stops both.
    await page.click('#tab-profiles');
    await visible('#profile-cards [data-profile="corp"]');
    await page.clock.runFor(125_000);
    await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
    assert.deepEqual(seen, { stats: 2, failures: 1 }, 'no Intune polling on the Profiles tab');
    page.off('request', count);
    await page.goBack();
    await visible('#intune-cards [data-profile="corp"] button.reload');
  });

  await check('trust anchor reload: confirmed in a modal, then the anchors are re-read', async () => {
    await page.click('#intune-cards [data-profile="corp"] button.reload');
    await visible('#reload-dialog');
    assert.match(await page.textContent('#reload-text'), /profile corp/);
    await page.click('#reload-cancel');
    await hidden('#reload-dialog');
    await page.click('#intune-cards [data-profile="corp"] button.reload');
    const reloaded = page.waitForResponse((r) => r.url().endsWith('/intune/reload-trust'));
    await page.click('#reload-confirm');
    assert.equal((await reloaded).status(), 200);
    await hidden('#reload-dialog');
    await visible('#toast');
    assert.match(await page.textContent('#toast'), /Reloaded the trust anchors of corp: 1 certificate in force/);
    await page.evaluate(() => { document.getElementById('toast').hidden = true; });
  });

  await check('a failed reload keeps the modal open with the reason, and a retry after the fix succeeds', async () => {
    const good = fs.readFileSync(BUNDLE_PATH);
    fs.writeFileSync(BUNDLE_PATH, 'this is not a certificate\n');
    try {
      await page.click('#intune-cards [data-profile="corp"] button.reload');
      await page.click('#reload-confirm');
      await visible('#reload-error');
      assert.match(await page.textContent('#reload-error'), /kept/);
      assert.equal(await page.isVisible('#reload-dialog'), true);
      assert.equal(await page.isEnabled('#reload-confirm'), true);
    } finally {
      fs.writeFileSync(BUNDLE_PATH, good);
    }
    const reloaded = page.waitForResponse((r) => r.url().endsWith('/intune/reload-trust'));
    const restats = page.waitForResponse((r) => r.url().endsWith('/intune/stats'));
    await page.click('#reload-confirm');
    assert.equal((await reloaded).status(), 200);
    await hidden('#reload-dialog');
    await visible('#toast');
    assert.match(await page.textContent('#toast'), /1 certificate in force/);
    await restats;
    await page.waitForFunction(() => document.querySelector('#intune-cards [data-counter="success"]') !== null);
    assert.equal(await counter('success'), 2, 'counters survive the reload');
    assert.equal(await counter('replay'), 1, 'counters survive the reload');
  });

  await check('/ui/scep/intune deep-links to the Intune tab, every profile', async () => {
    await page.goto(`${URL_BASE}/ui/scep/intune`);
    await visible('#intune-cards [data-profile="plain"]');
    assert.equal(await page.getAttribute('#tab-intune', 'aria-current'), 'page');
    assert.match(await page.textContent('#intune-cards [data-profile="plain"]'), /Intune disabled/);
    assert.equal(await page.isHidden('#intune-filter'), true);
  });

  await check('Intune tab: an API-mode profile shows its hops, latencies, Intune codes, revocation sync and compliance', async () => {
    const card = '#intune-cards [data-profile="intune-api"]';
    await visible(card);
    assert.equal(await page.getAttribute(card, 'data-mode'), 'api');
    const text = await page.textContent(card);
    assert.match(text, /Intune API mode/);
    assert.match(text, /contoso\.onmicrosoft\.com/);
    assert.match(text, /client secret/);
    // One token per audience and one discovery (Graph's token also served the compliance
    // lookups); four validateRequest calls, two success notifications, one failure notification.
    assert.match(await page.textContent(`${card} [data-hop="token"]`), /^ok 2 calls · last \d+ ms · mean \d+ ms$/);
    assert.match(await page.textContent(`${card} [data-hop="discovery"]`), /^ok 1 call · last \d+ ms/);
    assert.match(await page.textContent(`${card} [data-hop="validateRequest"]`), /4 calls/);
    assert.match(await page.textContent(`${card} [data-hop="successNotification"]`), /^ok 2 calls/);
    assert.match(await page.textContent(`${card} [data-hop="failureNotification"]`), /^ok 1 call/);
    const codes = await page.$$eval(`${card} table.codes tbody tr`, (rows) =>
      rows.map((r) => [...r.cells].map((c) => c.textContent).join(' ')));
    assert.deepEqual(codes.sort(), ['failureNotification Success 1', 'successNotification Success 2',
      'validateRequest ChallengeDecryptionError 1', 'validateRequest Success 3']);
    assert.equal(await page.textContent(`${card} [data-revocation]`), 'off');
    const gate = await page.textContent(`${card} [data-compliance="graph"]`);
    assert.match(gate, /^graph: 2 allowed, 1 refused \(compliant 2, noncompliant 1\)/);
    assert.match(gate, /device gui-noncompliant is "noncompliant"/);
    // The connector-mode card says its gate is off.
    assert.equal(await page.textContent('#intune-cards [data-profile="corp"] [data-compliance="off"]'), 'off');
  });

  await check('Recent Activity: every audit event, hostile subjects shown as text', async () => {
    await page.click('#tab-activity');
    await page.locator('#activity tbody tr[data-id]').first().waitFor();
    const actions = await page.$$eval('#activity tbody tr[data-id]', (rows) => rows.map((r) => r.cells[2].textContent));
    assert.ok(actions.includes('scep_pkcsreq'), `${actions}`);
    assert.ok(actions.includes('scep_pkcsreq_intune'), `${actions}`);
    const subjects = await page.$$eval('#activity tbody tr[data-id]', (rows) => rows.map((r) => r.cells[7].textContent));
    assert.ok(subjects.includes(`CN=${rfc4514(HOSTILE_CN)}`), `hostile subject shown as text: ${subjects}`);
    assert.equal(await page.locator('#activity img, #activity b, #activity script').count(), 0);
    assert.equal(await page.evaluate(() => window.__scepdXss), undefined);
    await shot('activity');
  });

  await check('Recent Activity: filters go to the API and into the address, details expand', async () => {
    await page.fill('#f-outcome', 'replay');
    await page.click('#activity-form button[type=submit]');
    await page.waitForURL(/outcome=replay/);
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#activity tbody tr[data-id]')];
      return rows.length > 0 && rows.every((r) => r.cells[3].textContent === 'replay');
    });
    const rows = page.locator('#activity tbody tr[data-id]');
    assert.equal(await rows.count(), 1);
    await rows.first().locator('button').click();
    const details = await page.textContent('#activity tbody tr.details pre');
    assert.equal(JSON.parse(details).outcome, 'replay');
    assert.equal(JSON.parse(details).intune_subject, 'device-guid-1');
    await page.selectOption('#f-profile', 'plain');
    await page.fill('#f-outcome', '');
    await page.selectOption('#f-limit', '50');
    await page.click('#activity-form button[type=submit]');
    await page.waitForURL((u) => u.searchParams.get('profile') === 'plain' && u.searchParams.get('limit') === '50');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#activity tbody tr[data-id]')];
      return rows.length > 0 && rows.every((r) => r.cells[1].textContent === 'plain');
    });
    await page.goBack();
    await page.waitForURL(/outcome=replay/);
    assert.equal(await page.inputValue('#f-outcome'), 'replay');
  });

  await check('Recent Activity: paging keeps the applied filters and page size', async () => {
    await page.goto(`${URL_BASE}/ui/scep?tab=activity&limit=2`);
    await page.locator('#activity tbody tr[data-id]').first().waitFor();
    const ids = () => page.$$eval('#activity tbody tr[data-id]', (rows) => rows.map((r) => Number(r.dataset.id)));
    const first = await ids();
    assert.equal(first.length, 2);
    await page.fill('#f-outcome', 'typed-but-not-applied');
    await page.click('#older');
    await page.waitForURL((u) => u.searchParams.get('before_id') === String(first[1]));
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('limit'), '2');
    assert.equal(url.searchParams.get('outcome'), null);
    await page.waitForFunction((below) => {
      const rows = [...document.querySelectorAll('#activity tbody tr[data-id]')];
      return rows.length === 2 && rows.every((r) => Number(r.dataset.id) < below);
    }, first[1]);
    await page.click('#newer');
    await page.waitForURL((u) => !u.searchParams.has('before_id') && u.searchParams.get('limit') === '2');
    await page.waitForFunction((want) => {
      const rows = [...document.querySelectorAll('#activity tbody tr[data-id]')];
      return rows.length === 2 && Number(rows[0].dataset.id) === want;
    }, first[0]);
  });

  await check('Certificates tab: the charts render (24 h, 7 days, expiry months) with uPlot under the policy', async () => {
    await page.goto(`${URL_BASE}/ui/scep?tab=certificates`);
    await page.locator('#certificates tbody tr[data-serial]').first().waitFor();
    assert.equal(await page.getAttribute('#tab-certificates', 'aria-current'), 'page');
    for (const id of ['chart-24h', 'chart-7d', 'chart-expiry']) {
      await page.locator(`#${id} canvas`).waitFor();
    }
    assert.equal(await page.getAttribute('#chart-24h', 'data-hours'), '24');
    assert.equal(await page.getAttribute('#chart-7d', 'data-hours'), '168');
    assert.equal(await page.getAttribute('#chart-expiry', 'data-months'), '1', 'five certificates, one expiry month');
    // Something was drawn in each series colour: the enrolments (green) and the failures
    // (red: the replay and the claim mismatch) of the last hour, the expiry bar (blue).
    const drawn = (id, [r, g, b]) => page.$eval(`#${id} canvas`, (c, want) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.abs(d[i] - want[0]) < 24 && Math.abs(d[i + 1] - want[1]) < 24 && Math.abs(d[i + 2] - want[2]) < 24 && d[i + 3] > 200) n++;
      }
      return n;
    }, [r, g, b]);
    assert.ok(await drawn('chart-24h', [0x15, 0x80, 0x3d]) > 0, 'enrolments drawn in the 24 h chart');
    assert.ok(await drawn('chart-24h', [0xb9, 0x1c, 0x1c]) > 0, 'failures drawn in the 24 h chart');
    assert.ok(await drawn('chart-7d', [0x15, 0x80, 0x3d]) > 0, 'enrolments drawn in the 7 day chart');
    assert.ok(await drawn('chart-expiry', [0x1d, 0x4e, 0xd8]) > 0, 'the expiry bar drawn');
    await shot('certificates');
  });

  await check('Certificates tab: every issued certificate, search, details with PEM and history', async () => {
    const rows = page.locator('#certificates tbody tr[data-serial]');
    assert.equal(await rows.count(), 5, 'dev1, dev2, the hostile CN and the two API-mode devices');
    const subjects = await page.$$eval('#certificates tbody tr[data-serial]', (r) => r.map((x) => x.cells[1].textContent));
    assert.ok(subjects.some((t) => t.includes(`CN=${rfc4514(HOSTILE_CN)}`)), `hostile subject as text: ${subjects}`);
    assert.equal(await page.locator('#certificates img, #certificates b, #certificates script').count(), 0);
    assert.match(await rows.first().textContent(), /valid/);
    assert.match(await rows.first().textContent(), /days left/, 'an expiry badge');
    await page.fill('#c-q', 'DEV2');
    await page.click('#certificates-form button[type=submit]');
    await page.waitForURL((u) => u.searchParams.get('q') === 'DEV2');
    await page.waitForFunction(() => document.querySelectorAll('#certificates tbody tr[data-serial]').length === 1);
    assert.match(await rows.first().textContent(), /dev2\.example\.com/);
    await rows.first().locator('button.details').click();
    await visible('#certificate-dialog');
    const serial = await rows.first().getAttribute('data-serial');
    assert.equal(await page.textContent('#certificate-title'), `Certificate ${serial}`);
    assert.match(await page.textContent('#certificate-pem'), /^-----BEGIN CERTIFICATE-----/);
    assert.match(await page.textContent('#certificate-history'), /issued/);
    assert.match(await page.textContent('#certificate-fields'), /device-guid-2/, 'the Intune device id');
  });

  await check('Certificates tab: Revoke asks again naming the certificate and a reason, then shows it revoked', async () => {
    const serial = await page.getAttribute('#certificates tbody tr[data-serial]', 'data-serial');
    assert.equal(await page.isHidden('#revoke-box'), true, 'nothing is revoked before the confirmation');
    await page.click('#revoke-start');
    await visible('#revoke-box');
    const question = await page.textContent('#revoke-text');
    assert.ok(question.includes('dev2.example.com') && question.includes(serial), question);
    await page.selectOption('#revoke-reason', 'keyCompromise');
    await page.click('#revoke-confirm');
    await page.waitForFunction(() => /revoked \(keyCompromise\)/.test(document.querySelector('#certificate-fields').textContent));
    assert.match(await page.textContent('#toast'), /Revoked .*dev2\.example\.com/);
    assert.match(await page.textContent('#certificate-history'), /revoked/);
    assert.equal(await page.isHidden('#revoke-start'), true, 'a revoked certificate offers no second revocation');
    await page.click('#certificate-close');
    await hidden('#certificate-dialog');
    await page.waitForFunction(() => /revoked \(keyCompromise\)/.test(document.querySelector('#certificates tbody tr[data-serial]').textContent));
    await page.goto(`${URL_BASE}/ui/scep?tab=certificates&status=revoked`);
    await page.waitForFunction((s) => {
      const r = [...document.querySelectorAll('#certificates tbody tr[data-serial]')];
      return r.length === 1 && r[0].dataset.serial === s;
    }, serial);
    assert.equal(await page.inputValue('#c-status'), 'revoked');
  });

  await check('sign out forgets the key, and the next key sees none of what the last one saw', async () => {
    await page.click('#sign-out');
    await visible('#sign-in');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.locator('#profile-cards > *, #intune-cards > *, #activity tbody tr, #failures tbody tr, #certificates tbody tr, #chart-24h canvas').count(), 0);
    await page.goBack(); // history without a key stays on the sign-in form
    await visible('#sign-in');
    assert.equal(await page.isHidden('#sign-in-error'), true);
    await page.reload();
    await visible('#sign-in');
    await signIn(READER_KEY);
    await visible('#forbidden');
    assert.equal(await page.isHidden('#app'), true);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused key is not kept');
  });

  assert.deepEqual(problems, [], 'no script errors or policy violations');
  console.log('all GUI checks passed');
} catch (err) {
  console.error(`not ok - ${step}\n${err.stack || err}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
