// Medusa's own JavaScript SDK, unchanged, against the real keyward binary.
// Run by scripts/test after the Rust tests have built target/debug/keyward (or KEYWARD_BIN).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Medusa from "@medusajs/js-sdk";
import { startKeyward } from "../../scripts/js/serve.mjs";

const EMAIL = "admin@test.local";
const PASSWORD = "supersecret";
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const KEY_FIELDS = ["id", "title", "token", "redacted", "type", "last_used_at", "updated_at", "created_at",
  "created_by", "revoked_at", "revoked_by", "sales_channels"];

let baseUrl, stop;

before(async () => {
  ({ base: baseUrl, stop } = await startKeyward({ name: "sdk", email: EMAIL, password: PASSWORD, jwtSecret: "sdk-test-secret-sdk-test-secret-0001" }));
});

after(() => stop?.());

const jwtClient = () => new Medusa({ baseUrl, auth: { type: "jwt", jwtTokenStorageMethod: "memory" } });

async function refused(promise, status, message) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.status, status, `status of ${e.message}`);
    if (message) assert.equal(e.message, message);
    return true;
  });
}

test("an admin logs in, manages keys and channels, and logs out with the SDK", async () => {
  const sdk = jwtClient();
  const token = await sdk.auth.login("user", "emailpass", { email: EMAIL, password: PASSWORD });
  assert.equal(typeof token, "string");
  assert.equal(token.split(".").length, 3);

  const { api_key: created } = await sdk.admin.apiKey.create({ title: "SDK secret", type: "secret" });
  assert.deepEqual(Object.keys(created), ["id", "token", "redacted", "title", "type", "last_used_at", "created_by",
    "revoked_by", "revoked_at", "created_at", "updated_at", "deleted_at"]);
  assert.match(created.id, /^apk_[0-9A-Z]{26}$/);
  assert.match(created.token, /^sk_[0-9A-Za-z]{49}$/);
  assert.equal(created.redacted, `${created.token.slice(0, 6)}***${created.token.slice(-3)}`);
  assert.equal(created.title, "SDK secret");
  assert.equal(created.type, "secret");
  assert.equal(created.last_used_at, null);
  assert.match(created.created_by, /^user_/);
  assert.equal(created.revoked_by, null);
  assert.equal(created.revoked_at, null);
  assert.match(created.created_at, ISO);
  assert.equal(created.updated_at, created.created_at);
  assert.equal(created.deleted_at, null);

  const listed = await sdk.admin.apiKey.list({ type: "secret" });
  assert.deepEqual({ count: listed.count, offset: listed.offset, limit: listed.limit }, { count: 1, offset: 0, limit: 20 });
  assert.deepEqual(Object.keys(listed.api_keys[0]), KEY_FIELDS);
  assert.equal(listed.api_keys[0].id, created.id);
  assert.equal(listed.api_keys[0].token, "", "a secret token is never listed");
  assert.deepEqual(listed.api_keys[0].sales_channels, []);

  const { api_key: one } = await sdk.admin.apiKey.retrieve(created.id);
  assert.equal(one.id, created.id);
  assert.equal(one.token, "");
  assert.equal(one.redacted, created.redacted);

  const { api_key: renamed } = await sdk.admin.apiKey.update(created.id, { title: "SDK secret, renamed" });
  assert.equal(renamed.title, "SDK secret, renamed");
  assert.equal(renamed.type, "secret");

  const { sales_channel: channel } = await sdk.admin.salesChannel.create({ name: "SDK channel", description: "made by the SDK" });
  assert.match(channel.id, /^sc_/);
  assert.equal(channel.name, "SDK channel");
  assert.equal(channel.description, "made by the SDK");
  assert.equal(channel.is_disabled, false);
  const channels = await sdk.admin.salesChannel.list();
  assert.equal(channels.count, 2, "SDK channel and the seeded default");
  assert.deepEqual(channels.sales_channels.map((c) => c.name).sort(), ["Default Sales Channel", "SDK channel"]);

  const { api_key: pk } = await sdk.admin.apiKey.create({ title: "SDK storefront", type: "publishable" });
  assert.match(pk.token, /^pk_/);
  const { api_key: linked } = await sdk.admin.apiKey.batchSalesChannels(pk.id, { add: [channel.id] });
  assert.deepEqual(linked.sales_channels, [{ id: channel.id, name: "SDK channel" }]);
  const { api_key: unlinked } = await sdk.admin.apiKey.batchSalesChannels(pk.id, { remove: [channel.id] });
  assert.deepEqual(unlinked.sales_channels, []);
  await refused(sdk.admin.apiKey.batchSalesChannels(created.id, { add: [channel.id] }), 400,
    "Sales channels can only be associated with publishable API keys");

  const { api_key: revoked } = await sdk.admin.apiKey.revoke(created.id);
  assert.match(revoked.revoked_at, ISO);
  assert.equal(revoked.revoked_by, created.created_by);
  await refused(sdk.admin.apiKey.revoke(created.id), 400, "There are 1 secret keys that are already revoked.");

  const deleted = await sdk.admin.apiKey.delete(created.id);
  assert.deepEqual(deleted, { id: created.id, object: "api_key", deleted: true });
  await refused(sdk.admin.apiKey.retrieve(created.id), 404, `API Key with id: ${created.id} was not found`);

  await sdk.auth.logout();
  await refused(sdk.admin.apiKey.list(), 401, "Unauthorized");
});

test("a client configured with a secret key lists keys until the key is revoked", async () => {
  const admin = jwtClient();
  await admin.auth.login("user", "emailpass", { email: EMAIL, password: PASSWORD });
  const { api_key: sk } = await admin.admin.apiKey.create({ title: "SDK automation", type: "secret" });
  const machine = new Medusa({ baseUrl, apiKey: sk.token });
  const listed = await machine.admin.apiKey.list({ q: "automation" });
  assert.equal(listed.count, 1);
  assert.equal(listed.api_keys[0].id, sk.id);
  const { api_key: made } = await machine.admin.apiKey.create({ title: "made by a key", type: "publishable" });
  assert.equal(made.created_by, sk.id, "the key itself is the actor");
  await admin.admin.apiKey.revoke(sk.id);
  await refused(machine.admin.apiKey.list(), 401, "Unauthorized");
});

test("a client configured with a publishable key reaches store routes", async () => {
  const admin = jwtClient();
  await admin.auth.login("user", "emailpass", { email: EMAIL, password: PASSWORD });
  const { api_key: pk } = await admin.admin.apiKey.create({ title: "SDK shop", type: "publishable" });
  const { sales_channel: channel } = await admin.admin.salesChannel.create({ name: "SDK shop channel" });
  await admin.admin.apiKey.batchSalesChannels(pk.id, { add: [channel.id] });

  const shop = new Medusa({ baseUrl, publishableKey: pk.token });
  const regions = await shop.store.region.list();
  assert.deepEqual(regions, { regions: [], count: 0, offset: 0, limit: 50 });
  const scoped = await shop.client.fetch("/store/sales-channels");
  assert.deepEqual(scoped.sales_channels.map((c) => c.id), [channel.id]);

  const anonymous = new Medusa({ baseUrl });
  await refused(anonymous.store.region.list(), 400,
    "Publishable API key required in the request header: x-publishable-api-key. You can manage your keys in settings in the dashboard.");
  await admin.admin.apiKey.revoke(pk.id);
  await refused(shop.store.region.list(), 400, "A valid publishable key is required to proceed with the request");
});
