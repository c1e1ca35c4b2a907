// The dashboard's end-to-end browser test: a client's whole story in
// Debian's chromium, driven by playwright-core. caddymodule's
// TestDashboardInBrowser starts arcane and runs this script; it can also run
// by hand against any arcane with open sign-up (see the environment below).
//
//   node dashboard.mjs
//
// Environment:
//   BASE         the site, e.g. http://localhost:9080 (required)
//   SCREENSHOTS  a folder for full-page PNGs of every page (optional)
//   CHROMIUM     the browser (default /usr/bin/chromium)
//   EMAIL        the account to sign up (default: a fresh random one)
//   PASSWORD     its password (default: a random one)
//   BALANCE      the balance a sign-up starts with, as the overview shows
//                it (default $5.00)
//   MODEL        the model the key is limited to and called (default gpt-5.2)
//
// Every check that fails ends the script with exit status 1 and a message
// naming the step; each step has a time limit, and so has the whole run.
// On success the last line is `RESULT {json}` with what the story made
// (email, key id, request id), for the Go test to check against the store.

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.BASE || '').replace(/\/+$/, '');
if (!BASE) fail('setup', 'set BASE to the site, e.g. BASE=http://localhost:9080');
const DASH = BASE + '/dashboard';
const SCREENSHOTS = process.env.SCREENSHOTS ? resolve(process.env.SCREENSHOTS) : '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const EMAIL = process.env.EMAIL || `client-${randomBytes(4).toString('hex')}@example.com`;
const PASSWORD = process.env.PASSWORD || `pw-${randomBytes(9).toString('base64url')}`;
const BALANCE = process.env.BALANCE || '$5.00';
const MODEL = process.env.MODEL || 'gpt-5.2';

// Time limits: a wait inside a step, a step, the whole run.
const WAIT_MS = 10_000;
const STEP_MS = 30_000;
const RUN_MS = 150_000;

const runTimer = setTimeout(() => die('run', `the whole run took over ${RUN_MS / 1000}s`), RUN_MS);
runTimer.unref();

let browser;
let page;
let current = 'setup';
// Console errors and uncaught exceptions of the pages: a script refused by
// the Content Security Policy or failing shows here, not in a check.
const pageErrors = [];

// die reports a failure and ends the process once the browser is closed,
// or after 5s if closing it hangs.
function die(step, message) {
  console.error(`FAIL [${step}] ${message}`);
  if (page) console.error(`  page: ${page.url()}`);
  process.exitCode = 1;
  const closing = browser ? browser.close().catch(() => {}) : Promise.resolve();
  Promise.race([closing, new Promise((r) => setTimeout(r, 5000))]).then(() => process.exit(1));
}

// fail is die, and stops the step that called it.
function fail(step, message) {
  die(step, message);
  throw new StepFailure(message);
}

class StepFailure extends Error {}

function check(cond, message) {
  if (!cond) fail(current, message);
}

async function step(name, fn) {
  current = name;
  const started = Date.now();
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the step took over ${STEP_MS / 1000}s`)), STEP_MS);
  });
  try {
    await Promise.race([fn(), limit]);
  } catch (err) {
    if (err instanceof StepFailure) throw err;
    let detail = err && err.message ? err.message.split('\n').slice(0, 6).join('\n  ') : String(err);
    try {
      const text = (await page.locator('main').innerText({ timeout: 1000 })).trim().slice(0, 400);
      detail += `\n  the page says: ${text.replace(/\s+/g, ' ')}`;
    } catch {}
    fail(name, detail);
  } finally {
    clearTimeout(timer);
  }
  if (pageErrors.length) fail(name, `the page reported errors:\n  ${pageErrors.join('\n  ')}`);
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

async function shot(name) {
  if (!SCREENSHOTS) return;
  await page.screenshot({ path: join(SCREENSHOTS, name), fullPage: true, timeout: WAIT_MS });
}

async function text(selector) {
  return (await page.locator(selector).innerText({ timeout: WAIT_MS })).trim();
}

// dollars reads "$4.999887" or "-$0.000112" as a number.
function dollars(s) {
  const m = /^(-?)\$([\d,]+\.\d+)$/.exec(s.trim());
  check(m, `"${s}" is not an amount in dollars`);
  return (m[1] ? -1 : 1) * Number(m[2].replaceAll(',', ''));
}

// nav is a link of the menu in the page's header.
function nav(name) {
  return page.locator('header nav').getByRole('link', { name, exact: true });
}

// path is the page's path and query, to compare with what is expected.
function path() {
  const u = new URL(page.url());
  return u.pathname + u.search;
}

// submit clicks a form's submit button and waits for the answer's page to
// load; the caller then checks where it landed.
async function submit(form) {
  await Promise.all([
    page.waitForEvent('load', { timeout: WAIT_MS }),
    page.locator(`${form} [type=submit]`).click({ timeout: WAIT_MS }),
  ]);
}

// chat sends a chat completion with the key from node, as a client would.
async function chat(key) {
  const resp = await fetch(BASE + '/v1/chat/completions', {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hi.' }], max_tokens: 50 }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const body = await resp.text();
  return { status: resp.status, requestId: resp.headers.get('x-request-id'), body };
}

try {
  if (SCREENSHOTS) mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: STEP_MS,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(BASE).origin });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  page.on('pageerror', (err) => pageErrors.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    // A wrong password answers 401 and a refused form 4xx: the browser
    // logs each such page load, which is not the page's fault.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) pageErrors.push(msg.text());
  });
  console.log(`chromium ${browser.version()}; signing up ${EMAIL} at ${DASH}/`);

  await step('a visitor is sent to the log-in page', async () => {
    await page.goto(DASH + '/');
    check(path() === '/dashboard/login', `opening the dashboard landed on ${path()}, want /dashboard/login`);
    check(await page.locator('form#login').isVisible(), 'the log-in page has no form#login');
    await shot('login.png');
  });

  await step('sign up', async () => {
    await page.getByRole('link', { name: 'Sign up', exact: true }).click();
    await page.waitForURL(DASH + '/signup');
    await page.fill('form#signup input[name=email]', EMAIL);
    await page.fill('form#signup input[name=password]', PASSWORD);
    await page.fill('form#signup input[name=password2]', PASSWORD);
    await shot('signup.png');
    await submit('form#signup');
    check(path() === '/dashboard/', `signing up landed on ${path()}, want the overview /dashboard/`);
    const balance = await text('#balance');
    check(balance === BALANCE, `#balance shows ${balance}, want the starting balance ${BALANCE}`);
    check((await text('header .who')) === EMAIL, 'the header does not name the signed-up email');
  });

  await step('log out', async () => {
    await submit('form#logout');
    check(path() === '/dashboard/login?out=1', `logging out landed on ${path()}, want /dashboard/login?out=1`);
    check((await text('#notice')) === 'You are logged out.', 'the log-in page does not say the user is logged out');
  });

  await step('a wrong password is refused', async () => {
    await page.fill('form#login input[name=email]', EMAIL);
    await page.fill('form#login input[name=password]', PASSWORD + 'x');
    await submit('form#login');
    const error = await text('#error');
    check(error === 'Wrong email or password.', `#error says "${error}", want "Wrong email or password."`);
    check((await page.locator('form#logout').count()) === 0, 'a wrong password logged the user in');
  });

  await step('log in', async () => {
    await page.fill('form#login input[name=email]', EMAIL);
    await page.fill('form#login input[name=password]', PASSWORD);
    await submit('form#login');
    check(path() === '/dashboard/', `logging in landed on ${path()}, want /dashboard/`);
    const balance = await text('#balance');
    check(balance === BALANCE, `#balance shows ${balance} after log-in, want ${BALANCE}`);
  });

  let secret, keyId;
  await step('create a key limited to one model', async () => {
    await nav('API keys').click();
    await page.waitForURL(DASH + '/keys');
    await page.fill('form#create-key input[name=name]', 'browser test');
    const box = page.locator(`form#create-key input[name=models][value="${MODEL}"]`);
    check((await box.count()) === 1, `the key form offers no checkbox for ${MODEL}`);
    await box.check();
    await submit('form#create-key');
    secret = await text('#new-key-secret');
    check(/^ak_[A-Za-z0-9_-]{20,}$/.test(secret), `#new-key-secret shows "${secret}", want an ak_ key`);
    const rows = page.locator('table#keys tr[data-key-id]');
    check((await rows.count()) === 1, `the keys table has ${await rows.count()} keys, want 1`);
    keyId = await rows.first().getAttribute('data-key-id');
    const row = await rows.first().innerText();
    check(row.includes('ak_…' + secret.slice(-4)), `the key's row does not show its last four: ${row}`);
    check(row.includes('browser test') && row.includes(MODEL) && row.includes('active'),
      `the key's row lacks its name, model or state: ${row}`);
  });

  await step('copy the key', async () => {
    await page.click('#copy-key');
    // "Copied" only once the clipboard took it; "Press Ctrl-C" if refused.
    await page.locator('#copy-key', { hasText: 'Copied' }).waitFor();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    check(copied === secret, `the clipboard holds "${copied}", want the shown secret`);
    await shot('keys.png');
  });

  let requestId;
  let accountId = '';
  await step('call /v1/chat/completions with the copied key', async () => {
    const resp = await chat(secret);
    check(resp.status === 200, `status ${resp.status}, want 200; body ${resp.body.slice(0, 300)}`);
    const completion = JSON.parse(resp.body);
    const content = completion.choices?.[0]?.message?.content;
    check(typeof content === 'string' && content.length > 0, `the answer has no completion: ${resp.body.slice(0, 300)}`);
    check(completion.model === MODEL, `the answer names model ${completion.model}, want ${MODEL}`);
    requestId = resp.requestId;
    check(requestId && requestId.startsWith('req_'), `the answer's X-Request-Id is "${requestId}", want a req_ id`);
  });

  await step('the request is in usage, with a chart', async () => {
    await nav('Usage').click();
    await page.waitForURL(DASH + '/usage');
    const row = page.locator(`table#ledger tr.ledger-row[data-request-id="${requestId}"]`);
    check((await row.count()) === 1, `the ledger has no row for request ${requestId}`);
    check((await row.getAttribute('class')).split(/\s+/).includes('charge'), 'the request\'s ledger row is not a charge');
    const cells = await row.locator('td').allInnerTexts();
    check(cells[2] === MODEL, `the charge row's model is "${cells[2]}", want ${MODEL}`);
    check(cells[3].includes('…' + secret.slice(-4)), `the charge row's key is "${cells[3]}", want the new key`);
    check(dollars(cells[6]) < 0, `the charge row's amount is ${cells[6]}, want a negative amount`);
    check((await page.locator('table#ledger tr.ledger-row.charge').count()) === 1, 'the ledger has more than one charge');
    check((await page.locator('table#ledger tr.ledger-row.credit').count()) === 1, 'the ledger lacks the opening credit');
    for (const id of ['#chart-tokens', '#chart-cost']) {
      const bars = await page.locator(`${id} svg.chart rect`).count();
      check(bars >= 1, `${id} draws no bar`);
      const box = await page.locator(`${id} svg.chart`).boundingBox();
      check(box && box.width > 300 && box.height > 50, `${id} is drawn ${box?.width}x${box?.height}, too small to read`);
    }
    await shot('usage.png');
  });

  await step('the balance dropped', async () => {
    await nav('Overview').click();
    await page.waitForURL(DASH + '/');
    const balance = await text('#balance');
    check(dollars(balance) < dollars(BALANCE), `#balance shows ${balance}, want less than ${BALANCE}`);
    check(dollars(await text('#spent')) > 0, 'the month\'s spend is still zero');
    check((await text('#api-url')) === BASE + '/v1', `the quickstart's API URL is not ${BASE}/v1`);
    // The id to give the operator, where the overview shows it.
    if (await page.locator('#account-id').count()) accountId = await text('#account-id');
    await shot('overview.png');
  });

  await step('the models page lists the model with its price', async () => {
    await nav('Models').click();
    await page.waitForURL(DASH + '/models');
    const row = page.locator(`table#models tr[data-model="${MODEL}"]`);
    check((await row.count()) === 1, `the models page has no row for ${MODEL}`);
    check(/\$\d/.test(await row.innerText()), `the models page shows no price for ${MODEL}`);
    await shot('models.png');
  });

  await step('revoke the key', async () => {
    await nav('API keys').click();
    await page.waitForURL(DASH + '/keys');
    check((await page.locator('#new-key-secret').count()) === 0, 'the keys page shows the secret a second time');
    let asked = '';
    page.once('dialog', (d) => {
      asked = `${d.type()}: ${d.message()}`;
      d.accept();
    });
    await submit(`tr[data-key-id="${keyId}"] form.revoke`);
    check(asked.startsWith('confirm: Revoke this key?'), `revoking asked "${asked}", want a confirm() dialog`);
    check(path() === `/dashboard/keys?revoked=${keyId}`, `revoking landed on ${path()}`);
    const row = page.locator(`tr[data-key-id="${keyId}"]`);
    const state = await row.locator('td.state').innerText();
    check(state.trim() === 'revoked', `the key's state cell says "${state}", want revoked`);
    check((await row.locator('form.revoke').count()) === 0, 'a revoked key still has a revoke button');
  });

  await step('the revoked key gets 401', async () => {
    const resp = await chat(secret);
    check(resp.status === 401, `status ${resp.status}, want 401; body ${resp.body.slice(0, 300)}`);
  });

  await step('log out, and the pages need a log-in again', async () => {
    await submit('form#logout');
    check(path() === '/dashboard/login?out=1', `logging out landed on ${path()}`);
    await page.goto(DASH + '/keys');
    check(path() === '/dashboard/login', `opening the keys page logged out landed on ${path()}, want /dashboard/login`);
    check((await page.locator('form#logout').count()) === 0, 'the log-in page shows a signed-in header');
  });

  await browser.close();
  console.log('RESULT ' + JSON.stringify({ email: EMAIL, keyId, requestId, last4: secret.slice(-4), accountId }));
  clearTimeout(runTimer);
} catch (err) {
  if (!(err instanceof StepFailure)) fail(current, err && err.stack ? err.stack : String(err));
}
