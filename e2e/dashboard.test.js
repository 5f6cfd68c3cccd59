// The dashboard of the real keyward binary, driven in headless Chromium (Debian's package, through
// playwright-core's executablePath) and checked with axe-core. Run by scripts/test after the Rust
// tests have built target/debug/keyward (or KEYWARD_BIN). With KEYWARD_SCREENSHOTS=DIR it also
// writes the screenshots shown in the README.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { startKeyward } from "../scripts/js/serve.mjs";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const CHROMIUM = process.env.KEYWARD_CHROMIUM ?? "/usr/bin/chromium";
// Relative to where npm was started (INIT_CWD), so `npm test --prefix e2e` from the root works.
const SHOTS = process.env.KEYWARD_SCREENSHOTS ? resolve(process.env.INIT_CWD ?? process.cwd(), process.env.KEYWARD_SCREENSHOTS) : null;
const EMAIL = "admin@test.local";
const PASSWORD = "supersecret";

let base, stop, browser;

before(async () => {
  ({ base, stop } = await startKeyward({ name: "dashboard", email: EMAIL, password: PASSWORD, jwtSecret: "dashboard-test-secret-0123456789abcdef" }));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  stop?.();
});

/** A fresh browser context and page; every request it makes and every console error is kept. */
async function open() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const requests = [];
  const problems = [];
  page.on("request", (r) => requests.push(r.url()));
  // A refused API call is logged by the browser as a failed load; that is an answer, not a fault.
  page.on("console", (m) => m.type() === "error" && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text()) && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(String(e)));
  return { context, page, requests, problems };
}

async function login(page) {
  await page.goto(`${base}/`);
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Publishable API keys" }).waitFor();
}

/** axe-core on the page as it is: no serious or critical violation. */
async function accessible(page, screen) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => (await globalThis.axe.run(document, { resultTypes: ["violations"] })).violations
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) })));
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad, [], `${screen}: ${JSON.stringify(bad, null, 2)}`);
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

/** Whether a token authenticates an admin request (HTTP Basic, as Medusa's clients send it). */
async function authenticates(token) {
  const res = await fetch(`${base}/admin/api-keys?limit=1`, { headers: { authorization: `Basic ${Buffer.from(`${token}:`).toString("base64")}` } });
  return res.status;
}

async function bearer() {
  const res = await fetch(`${base}/auth/user/emailpass`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email: EMAIL, password: PASSWORD }) });
  return (await res.json()).token;
}

async function adminGet(path) {
  const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${await bearer()}` } });
  assert.equal(res.status, 200, path);
  return res.json();
}

async function createInDialog(page, title, type, { check = false } = {}) {
  await page.getByRole("button", { name: "Create" }).click();
  const dialog = page.getByRole("dialog", { name: "Create an API key" });
  if (check) await accessible(page, "create dialog");
  await dialog.getByLabel("Title").fill(title);
  await dialog.getByLabel("Type").selectOption(type);
  await dialog.getByRole("button", { name: "Create" }).click();
}

/** Reads the token from the one-time dialog and closes it. */
async function tokenFromDialog(page) {
  const dialog = page.getByRole("dialog", { name: "Your new secret key" });
  await dialog.waitFor();
  const token = await dialog.getByLabel("Token").inputValue();
  assert.match(await dialog.textContent(), /will not be shown again/);
  assert.equal(await dialog.getByLabel("Token").getAttribute("readonly"), "");
  return { dialog, token };
}

test("the page is served by the binary, with a strict CSP and nothing from another origin", async () => {
  const root = await fetch(`${base}/`, { redirect: "manual" });
  assert.equal(root.status, 303);
  assert.equal(root.headers.get("location"), "/app");
  for (const path of ["/app", "/app/app.js", "/app/ui.js", "/app/app.css", "/app/icon.svg"]) {
    const res = await fetch(`${base}${path}`);
    assert.equal(res.status, 200, path);
    const csp = res.headers.get("content-security-policy");
    assert.ok(csp, `${path} has a Content-Security-Policy`);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/, "scripts from this origin only, none inline");
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  }
  const html = await (await fetch(`${base}/app`)).text();
  assert.doesNotMatch(html, /<script>|<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=/i, "no inline script, style or handler");

  const { context, page, requests, problems } = await open();
  await login(page);
  for (const view of ["#/secret", "#/channels", "#/activity"]) {
    await page.goto(`${base}/app${view}`);
    await page.getByRole("heading", { level: 1 }).waitFor();
  }
  const foreign = requests.filter((u) => !u.startsWith(`${base}/`));
  assert.deepEqual(foreign, [], "every request goes to the server's own origin");
  assert.ok(requests.some((u) => u.startsWith(`${base}/admin/`)), "the page talks to the admin API");
  assert.deepEqual(problems, [], "no script error and no CSP violation");
  await context.close();
});

test("an admin manages publishable and secret keys, rolls, revokes and deletes them", async () => {
  const { context, page, problems } = await open();
  await page.goto(`${base}/`);
  assert.equal(new URL(page.url()).pathname, "/app");
  await page.getByRole("heading", { name: "Log in to keyward" }).waitFor();
  await accessible(page, "login");
  await shot(page, "login");

  // A wrong password is refused in words, and the form stays.
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("alert").filter({ hasText: /./ }).waitFor();
  assert.match(await page.getByRole("alert").textContent(), /invalid|password|credentials/i);

  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Publishable API keys" }).waitFor();

  // A publishable key: created, listed with its full token.
  await createInDialog(page, "Storefront", "publishable", { check: true });
  const row = page.getByRole("row").filter({ hasText: "Storefront" });
  await row.waitFor();
  const listedToken = await row.locator("code").textContent();
  assert.match(listedToken, /^pk_/);
  await row.getByRole("button", { name: /Copy the token of Storefront/ }).waitFor();
  await accessible(page, "publishable keys");
  await shot(page, "publishable-keys");

  // A key that expires: chosen at create, shown in the list and on its page.
  await page.getByRole("button", { name: "Create" }).click();
  const expiring = page.getByRole("dialog", { name: "Create an API key" });
  await expiring.getByLabel("Title").fill("Campaign");
  await expiring.getByLabel("Expires").selectOption({ label: "7 days" });
  await expiring.getByRole("button", { name: "Create" }).click();
  const campaign = page.getByRole("row").filter({ hasText: "Campaign" });
  await campaign.waitFor();
  assert.match(await campaign.textContent(), /expires at/);
  const listed = await adminGet("/admin/api-keys?title=Campaign");
  const lives = new Date(listed.api_keys[0].expires_at) - Date.now();
  assert.ok(lives > 6.9 * 86400e3 && lives <= 7 * 86400e3, `expires in 7 days: ${listed.api_keys[0].expires_at}`);
  await page.getByLabel("Status").selectOption("active");
  await page.getByRole("row").filter({ hasText: "Campaign" }).waitFor();
  await page.getByLabel("Status").selectOption("expired");
  await page.getByText("No key matches these filters.").waitFor();
  await page.getByLabel("Status").selectOption("");

  // A secret key: the token once, in the dialog; it authenticates.
  await page.getByRole("link", { name: "Secret API keys" }).click();
  await page.getByRole("heading", { name: "Secret API keys" }).waitFor();
  await createInDialog(page, "Billing service", "secret");
  const { dialog, token: secret } = await tokenFromDialog(page);
  assert.match(secret, /^sk_/);
  await accessible(page, "token dialog");
  await shot(page, "secret-token");
  await dialog.getByRole("button", { name: "Done" }).click();
  assert.equal(await authenticates(secret), 200, "the token from the dialog authenticates");
  // One character changed (to another one: a token may already end in "x").
  const altered = `${secret.slice(0, -1)}${secret.endsWith("x") ? "y" : "x"}`;
  assert.equal(await authenticates(altered), 401);

  // A restricted key: permissions chosen at create, its token rk_…, its access shown in the list.
  await page.getByRole("button", { name: "Create" }).click();
  const restrictedDialog = page.getByRole("dialog", { name: "Create an API key" });
  await restrictedDialog.getByLabel("Title").fill("Verifier");
  await restrictedDialog.getByLabel("Type").selectOption("secret");
  await restrictedDialog.getByLabel(/Verify keys/).check();
  await accessible(page, "create dialog with permissions");
  await shot(page, "create-restricted-key");
  await restrictedDialog.getByRole("button", { name: "Create" }).click();
  const restricted = await tokenFromDialog(page);
  assert.match(restricted.token, /^rk_/);
  await restricted.dialog.getByRole("button", { name: "Done" }).click();
  assert.equal(await authenticates(restricted.token), 403, "a verify-only key cannot list keys");
  const verifierRow = page.getByRole("row").filter({ hasText: "Verifier" });
  await verifierRow.waitFor();
  assert.match(await verifierRow.textContent(), /Only: keys:verify/);

  // After a reload only its redacted form is left.
  await page.reload();
  const secretRow = page.getByRole("row").filter({ hasText: "Billing service" });
  await secretRow.waitFor();
  assert.match(await secretRow.textContent(), /sk_\w{3}\*\*\*\w{3}/);
  assert.ok(!(await page.content()).includes(secret), "the token is not on the page after a reload");
  await accessible(page, "secret keys");
  await shot(page, "secret-keys");

  // Roll with a grace period: the old token keeps working, the new one works.
  await secretRow.getByRole("link", { name: "Billing service" }).click();
  await page.getByRole("heading", { name: "Billing service" }).waitFor();
  const oldId = new URL(page.url()).hash.split("/").pop();
  await accessible(page, "secret key");
  await page.getByRole("button", { name: "Roll" }).click();
  const roll = page.getByRole("dialog", { name: /Roll Billing service/ });
  await roll.getByLabel("Grace period for the old key").selectOption("3600");
  await accessible(page, "roll dialog");
  await roll.getByRole("button", { name: "Roll" }).click();
  const rolled = await tokenFromDialog(page);
  assert.notEqual(rolled.token, secret);
  await rolled.dialog.getByRole("button", { name: "Done" }).click();
  await page.waitForURL((u) => !u.hash.endsWith(oldId));
  const newId = new URL(page.url()).hash.split("/").pop();
  assert.equal(await authenticates(secret), 200, "the old token works during the grace period");
  assert.equal(await authenticates(rolled.token), 200, "the new token works");
  await page.goto(`${base}/app#/keys/${oldId}`);
  await page.getByText(/revokes at/).first().waitFor();
  await shot(page, "secret-key");

  // Revoke the new key now: its token stops working.
  await page.goto(`${base}/app#/keys/${newId}`);
  await page.getByRole("heading", { name: "Billing service" }).waitFor();
  await page.getByRole("button", { name: "Revoke" }).click();
  const revoke = page.getByRole("dialog", { name: /Revoke Billing service/ });
  await revoke.getByLabel("When").selectOption("0");
  await accessible(page, "revoke dialog");
  await revoke.getByRole("button", { name: "Revoke" }).click();
  await page.locator(".status.revoked").waitFor();
  assert.equal(await authenticates(rolled.token), 401, "a revoked key stops authenticating");

  // Deleting an active key is refused with the server's message; a revoked one is deleted.
  await page.getByRole("link", { name: "Publishable API keys" }).click();
  await page.getByRole("row").filter({ hasText: "Storefront" }).getByRole("link", { name: "Storefront" }).click();
  await page.getByRole("heading", { name: "Storefront" }).waitFor();
  await page.getByRole("button", { name: "Delete" }).click();
  await accessible(page, "delete dialog");
  await page.getByRole("dialog", { name: /Delete Storefront/ }).getByRole("button", { name: "Delete" }).click();
  const refusal = page.getByRole("alert").filter({ hasText: /./ });
  await refusal.waitFor();
  assert.match(await refusal.textContent(), /^Cannot delete api keys that are not revoked/);
  await page.getByRole("button", { name: "Revoke" }).click();
  await page.getByRole("dialog", { name: /Revoke Storefront/ }).getByRole("button", { name: "Revoke" }).click();
  await page.locator(".status.revoked").waitFor();
  await page.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog", { name: /Delete Storefront/ }).getByRole("button", { name: "Delete" }).click();
  await page.getByRole("heading", { name: "Publishable API keys" }).waitFor();
  await page.getByText("Deleted Storefront").waitFor();
  assert.equal(await page.getByRole("row").filter({ hasText: "Storefront" }).count(), 0);
  const keys = await adminGet("/admin/api-keys?type=publishable&limit=100");
  assert.ok(!keys.api_keys.some((k) => k.title === "Storefront"), "the deleted key is gone from the API too");

  // The roll's run and its events are under Activity.
  await page.getByRole("link", { name: "Activity" }).click();
  await page.getByRole("heading", { name: "Activity" }).waitFor();
  const runRow = page.getByRole("row").filter({ hasText: "roll-api-key" }).first();
  await runRow.waitFor();
  assert.match(await runRow.textContent(), /done/);
  assert.match(await runRow.textContent(), /revoke-previous|create/);
  const rolledEvent = page.getByRole("row").filter({ hasText: "api_key.rolled" }).first();
  await rolledEvent.waitFor();
  assert.match(await rolledEvent.textContent(), new RegExp(newId));
  await accessible(page, "activity");
  await shot(page, "activity");

  assert.deepEqual(problems, [], "no script error and no CSP violation");
  await context.close();
});

test("a publishable key's sales channels are added and removed; channels are created", async () => {
  const { context, page } = await open();
  await login(page);
  await page.getByRole("link", { name: "Sales channels" }).click();
  await page.getByRole("heading", { name: "Sales channels", level: 1 }).waitFor();
  await page.getByLabel("Name", { exact: true }).fill("Web shop");
  await page.getByLabel("Description").fill("The main storefront");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("row").filter({ hasText: "Web shop" }).waitFor();
  // Bad input: a name is required, so the browser refuses an empty one and nothing is sent.
  await page.getByLabel("Name", { exact: true }).fill("");
  await page.getByRole("button", { name: "Create" }).click();
  assert.equal(await page.getByLabel("Name", { exact: true }).evaluate((el) => el.validity.valueMissing), true);
  await accessible(page, "sales channels");
  await shot(page, "sales-channels");

  await page.getByRole("link", { name: "Publishable API keys" }).click();
  await createInDialog(page, "Mobile app", "publishable");
  await page.getByRole("row").filter({ hasText: "Mobile app" }).getByRole("link", { name: "Mobile app" }).click();
  await page.getByRole("heading", { name: "Mobile app" }).waitFor();
  const id = new URL(page.url()).hash.split("/").pop();
  await page.getByLabel("Sales channel", { exact: true }).selectOption({ label: "Web shop" });
  await page.getByRole("button", { name: "Add" }).click();
  await page.getByRole("button", { name: "Remove Web shop" }).waitFor();
  let key = await adminGet(`/admin/api-keys/${id}`);
  assert.deepEqual(key.api_key.sales_channels.map((c) => c.name), ["Web shop"]);
  await accessible(page, "publishable key");
  await shot(page, "publishable-key");
  await page.getByRole("button", { name: "Remove Web shop" }).click();
  await page.getByText("Removed Web shop").waitFor();
  await page.getByText(/not limited to any sales channel/).waitFor();
  key = await adminGet(`/admin/api-keys/${id}`);
  assert.deepEqual(key.api_key.sales_channels, []);

  // Renaming through the Title field.
  await page.getByLabel("Title").fill("Mobile app v2");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("heading", { name: "Mobile app v2" }).waitFor();
  await context.close();
});

test("the keyboard alone logs in and creates a key; a dialog closes with Escape", async () => {
  const { context, page } = await open();
  await page.goto(`${base}/app`);
  await page.getByLabel("Email").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), await page.getByLabel("Email").getAttribute("id"));
  await page.keyboard.type(EMAIL);
  await page.keyboard.press("Tab");
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Publishable API keys" }).waitFor();

  await page.getByRole("button", { name: "Create" }).focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Create an API key" });
  await dialog.waitFor();
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Create", "focus returns to the opener");

  await page.keyboard.press("Enter");
  await dialog.waitFor();
  await page.keyboard.type("Typed by keyboard");
  await page.keyboard.press("Enter");
  await page.getByRole("row").filter({ hasText: "Typed by keyboard" }).waitFor();
  await context.close();
});

test("at 375 px no screen scrolls sideways, and each stays accessible", async () => {
  const { context, page } = await open();
  await page.setViewportSize({ width: 375, height: 740 });
  const fits = async (screen) => {
    await page.getByRole("heading", { level: 1 }).first().waitFor();
    await page.waitForLoadState("networkidle");
    const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= width, `${screen}: ${scroll} px wide in a ${width} px window`);
    await accessible(page, `${screen} at 375 px`);
  };
  await page.goto(`${base}/app`);
  await fits("login");
  await login(page);
  await createInDialog(page, "A rather long title for a narrow screen", "publishable");
  await page.getByRole("row").filter({ hasText: "A rather long title" }).waitFor();
  await fits("publishable keys");
  await page.getByRole("link", { name: "A rather long title for a narrow screen" }).click();
  await fits("publishable key");
  for (const view of ["#/secret", "#/channels", "#/activity"]) {
    await page.goto(`${base}/app${view}`);
    await fits(view);
  }
  await context.close();
});

test("an expired session returns to the login page with the reason; logging out lands there too", async () => {
  const { context, page } = await open();
  await login(page);
  // The session cookie is gone (expired, or ended elsewhere): the next call is refused.
  await context.clearCookies();
  await page.getByRole("link", { name: "Sales channels" }).click();
  await page.getByRole("heading", { name: "Log in to keyward" }).waitFor();
  await page.getByText("Your session has expired. Log in again.").waitFor();

  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Publishable API keys" }).waitFor();
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Log in to keyward" }).waitFor();
  await page.getByText("You are logged out.").waitFor();
  // The cookie was ended on the server: the API refuses it.
  const cookies = await context.cookies();
  assert.ok(!cookies.some((c) => c.name.includes("keyward_session") && c.value), "the session cookie is cleared");
  await page.goto(`${base}/app#/activity`);
  await page.getByRole("heading", { name: "Log in to keyward" }).waitFor();
  await context.close();
});

test("titles and names from the API are shown as text, never run as markup", async () => {
  const markup = `<img src=x onerror="window.pwned=1">`;
  const res = await fetch(`${base}/admin/api-keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${await bearer()}`, "content-type": "application/json" },
    body: JSON.stringify({ title: markup, type: "publishable" }),
  });
  assert.equal(res.status, 200);
  const { context, page } = await open();
  await login(page);
  const row = page.getByRole("row").filter({ hasText: markup });
  await row.waitFor();
  assert.equal(await row.locator("img").count(), 0, "the title is text, not an element");
  await row.getByRole("link").click();
  await page.getByRole("heading", { name: markup }).waitFor();
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await context.close();
});

test("a long list pages by 20 with Previous and Next", async () => {
  const headers = { authorization: `Bearer ${await bearer()}`, "content-type": "application/json" };
  for (let i = 0; i < 22; i++) {
    const res = await fetch(`${base}/admin/api-keys`, { method: "POST", headers, body: JSON.stringify({ title: `paged ${i}`, type: "secret" }) });
    assert.equal(res.status, 200);
  }
  const { count } = await adminGet("/admin/api-keys?type=secret&limit=1");
  const { context, page } = await open();
  await login(page);
  await page.goto(`${base}/app#/secret`);
  const pager = page.getByRole("navigation", { name: "Pages" });
  await pager.getByText(`1–20 of ${count}`).waitFor();
  assert.equal(await pager.getByRole("button", { name: "Previous" }).isDisabled(), true);
  await pager.getByRole("button", { name: "Next" }).click();
  await pager.getByText(`21–${Math.min(40, count)} of ${count}`).waitFor();
  assert.match(page.url(), /offset=20/);
  await pager.getByRole("button", { name: "Previous" }).click();
  await pager.getByText(`1–20 of ${count}`).waitFor();
  await context.close();
});
