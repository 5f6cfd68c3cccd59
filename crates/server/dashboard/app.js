// keyward dashboard: one page over the admin JSON API, authenticated by the session cookie.
// No framework and no build step; views are `#/…` fragments, and every change is one API call.
import {
  DELAYS, alertBox, api, attempt, byWhom, copyButton, field, h, keyStatus, modal, query, say, select, session, showToken,
  statusBadge, when,
} from "./ui.js";

const main = document.getElementById("main");
const top = document.getElementById("top");
const PAGE = 20;

// -- views ----------------------------------------------------------------------------------

function heading(text) {
  document.title = `${text} · keyward`;
  return h("h1", {}, text);
}

function viewLogin() {
  top.hidden = true;
  const error = alertBox();
  const reason = session.loginReason ? h("p", { class: "notice", role: "status" }, session.loginReason) : null;
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h("form", { class: "card login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to keyward"), reason, error, field("Email", email), field("Password", password), button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    await attempt(error, async () => {
      const { token } = await api("POST", "/auth/user/emailpass", { email: email.value, password: password.value });
      await api("POST", "/auth/session", undefined, { authorization: `Bearer ${token}` });
      await signedIn();
      session.loginReason = "";
      location.hash = "#/publishable";
    });
    button.disabled = false;
  });
  document.title = "Log in · keyward";
  main.replaceChildren(form);
  email.focus();
}

async function signedIn() {
  const { user } = await api("GET", "/admin/users/me");
  session.me = user;
  document.getElementById("who").textContent = user.email;
  top.hidden = false;
}

const STATUS_FILTERS = [
  ["", "All"],
  ["active", "Active"],
  ["revoking", "Revoking"],
  ["revoked", "Revoked"],
  ["expired", "Expired"],
];
const KEY_ORDERS = [
  ["-created_at", "Newest first"],
  ["created_at", "Oldest first"],
  ["title", "Title A–Z"],
  ["-title", "Title Z–A"],
  ["-last_used_at", "Recently used"],
];

function statusQuery(status) {
  const now = new Date().toISOString();
  if (status === "active") return { revoked_at: "null", "$or[0][expires_at]": "null", "$or[1][expires_at][$gt]": now };
  if (status === "revoking") return { "revoked_at[$gt]": now };
  if (status === "revoked") return { "revoked_at[$lte]": now };
  if (status === "expired") return { "expires_at[$lte]": now };
  return {};
}

async function viewKeys(type, params) {
  const label = type === "secret" ? "Secret API keys" : "Publishable API keys";
  const state = {
    q: params.get("q") || "",
    status: params.get("status") || "",
    order: params.get("order") || "-created_at",
    offset: Math.max(0, Number(params.get("offset")) || 0),
  };
  const error = alertBox();
  const q = h("input", { type: "search", name: "q", value: state.q });
  const status = select("status", STATUS_FILTERS, state.status);
  const order = select("order", KEY_ORDERS, state.order);
  const go = (changes) => {
    const next = { ...state, ...changes };
    location.hash = `#/${type}${query({ q: next.q, status: next.status, order: next.order === "-created_at" ? "" : next.order, offset: next.offset || "" })}`;
  };
  const filters = h("form", { class: "toolbar", role: "search", "aria-label": `Find ${label.toLowerCase()}` },
    h("div", { class: "grow" }, field("Search", q)),
    field("Status", status),
    field("Sort", order),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Apply")));
  // Any change of the filters starts again from the first page.
  const apply = () => go({ q: q.value.trim(), status: status.value, order: order.value, offset: 0 });
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    apply();
  });
  status.addEventListener("change", apply);
  order.addEventListener("change", apply);
  const create = h("button", { type: "button", class: "primary", onclick: () => createKey(type) }, "Create");
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 6 }, "Loading…")));
  const table = h("table", { class: "cards", "aria-label": label },
    h("thead", {}, h("tr", {}, ["Title", "Token", "Status", "Created", "Created by", "Last used"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  main.replaceChildren(h("div", { class: "row" }, heading(label), h("span", { class: "grow" }), create), filters, error, table, pager);

  const list = await attempt(error, () =>
    api("GET", `/admin/api-keys${query({ type, q: state.q, order: state.order, limit: PAGE, offset: state.offset, ...statusQuery(state.status) })}`));
  if (!list) {
    body.replaceChildren();
    return;
  }
  if (list.api_keys.length === 0) {
    const empty = state.q || state.status ? "No key matches these filters." : `No ${type} API keys yet. Create one to get started.`;
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6 }, empty)));
  } else {
    body.replaceChildren(...list.api_keys.map((key) => keyRow(key)));
  }
  pages(pager, list.offset, list.api_keys.length, list.count, "keys", (offset) => go({ offset }));
}

/** "1–20 of 35" with Previous and Next; `goTo(offset)` shows another page. */
function pages(pager, offset, shown, count, noun, goTo) {
  const last = Math.min(offset + shown, count);
  pager.replaceChildren(
    h("span", { class: "muted" }, count ? `${offset + 1}–${last} of ${count}` : `0 ${noun}`),
    h("button", { type: "button", disabled: offset === 0, onclick: () => goTo(Math.max(0, offset - PAGE)) }, "Previous"),
    h("button", { type: "button", disabled: last >= count, onclick: () => goTo(offset + PAGE) }, "Next"),
  );
}

function tokenCell(key) {
  if (key.type === "publishable" && key.token) {
    return h("span", { class: "row" }, h("code", {}, key.token), copyButton(key.token, `the token of ${key.title}`));
  }
  return h("code", {}, key.redacted);
}

/** A restricted key's permissions, listed under its title. */
function accessNote(key) {
  return key.permissions ? h("div", { class: "muted note" }, `Only: ${key.permissions.join(", ")}`) : null;
}

function keyRow(key) {
  const [kind, text] = keyStatus(key);
  return h("tr", {},
    h("td", { "data-label": "Title" }, h("a", { href: `#/keys/${key.id}` }, key.title || "(untitled)"), accessNote(key)),
    h("td", { "data-label": "Token" }, tokenCell(key)),
    h("td", { "data-label": "Status" }, statusBadge(kind, text)),
    h("td", { "data-label": "Created" }, when(key.created_at)),
    h("td", { "data-label": "Created by" }, byWhom(key.created_by)),
    h("td", { "data-label": "Last used" }, when(key.last_used_at)));
}

/** How long a new key lives: never (the default), or a choice of spans in seconds. */
const LIFETIMES = [["0", "Never"], ["86400", "1 day"], ["604800", "7 days"], ["2592000", "30 days"], ["7776000", "90 days"], ["31536000", "1 year"]];

/** What a restricted secret key may be allowed to do. */
const PERMISSIONS = [
  ["keys:verify", "Verify keys (POST /v1/keys/verify)"],
  ["api_keys:read", "Read API keys"],
  ["api_keys:write", "Create, change and revoke API keys"],
  ["sales_channels:read", "Read sales channels"],
  ["sales_channels:write", "Change sales channels"],
  ["workflows:read", "Read activity"],
  ["users:read", "Read the signed-in identity"],
  ["metrics:read", "Read metrics"],
];

/** The permission checkboxes of a new secret key: none checked is full access. */
function permissionChoice() {
  const boxes = PERMISSIONS.map(([name, text]) => {
    const box = h("input", { type: "checkbox", name: "permission", value: name, id: `perm-${name.replace(":", "-")}` });
    return h("div", { class: "check" }, box, h("label", { for: box.id }, text, " ", h("code", {}, name)));
  });
  const set = h("fieldset", { class: "field" },
    h("legend", {}, "Permissions"),
    h("p", { class: "muted" }, "Leave all unchecked for full access. With any checked the key is restricted (rk_…) to those."),
    boxes);
  const chosen = () => [...set.querySelectorAll("input:checked")].map((b) => b.value);
  return [set, chosen];
}

async function createKey(type) {
  const title = h("input", { name: "title", required: true, maxlength: 256 });
  const kind = select("type", [["publishable", "Publishable"], ["secret", "Secret"]], type);
  const lifetime = select("expires_in", LIFETIMES, "0");
  const [permissions, chosen] = permissionChoice();
  const showPermissions = () => (permissions.hidden = kind.value !== "secret");
  kind.addEventListener("change", showPermissions);
  showPermissions();
  const addresses = h("input", { name: "allowed_ips", placeholder: "203.0.113.0/24, 198.51.100.7" });
  const body = () => {
    const seconds = Number(lifetime.value);
    const allowed = addresses.value.split(",").map((a) => a.trim()).filter(Boolean);
    const perms = kind.value === "secret" ? chosen() : [];
    return {
      title: title.value, type: kind.value, ...(seconds > 0 ? { expires_in: seconds } : {}),
      ...(perms.length ? { permissions: perms } : {}), ...(allowed.length ? { allowed_ips: allowed } : {}),
    };
  };
  const created = await modal("Create an API key", [field("Title", title), field("Type", kind,
    "Publishable keys identify a storefront and are safe in a browser; secret keys authenticate a server and are shown once."),
    field("Expires", lifetime, "After this the key stops working on its own."), permissions,
    field("Allowed addresses", addresses, "Optional: addresses or CIDR blocks, comma-separated. The key works only from these.")], {
    confirm: "Create",
    onConfirm: async () => (await api("POST", "/admin/api-keys", body())).api_key,
  });
  if (!created) return;
  if (created.type === "secret") await showToken("Your new secret key", created.token);
  say(`Created ${created.title}`);
  if (location.hash === `#/${created.type}`) route();
  else location.hash = `#/${created.type}`;
}

async function viewKey(id) {
  const error = alertBox();
  main.replaceChildren(heading("API key"), error, h("p", { class: "muted" }, "Loading…"));
  const got = await attempt(error, () => api("GET", `/admin/api-keys/${encodeURIComponent(id)}`));
  if (!got) {
    main.replaceChildren(heading("API key"), error, h("p", {}, h("a", { href: "#/publishable" }, "Back to the keys")));
    return;
  }
  const key = got.api_key;
  const [kind, text] = keyStatus(key);
  const back = key.type === "secret" ? ["#/secret", "Secret API keys"] : ["#/publishable", "Publishable API keys"];
  const title = h("input", { name: "title", value: key.title, required: true, maxlength: 256 });
  const rename = h("form", { class: "toolbar", "aria-label": "Rename" },
    h("div", { class: "grow" }, field("Title", title)), h("div", { class: "field" }, h("button", { type: "submit" }, "Save")));
  rename.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (await attempt(error, () => api("POST", `/admin/api-keys/${key.id}`, { title: title.value }))) {
      say("Title saved");
      route();
    }
  });
  const revoked = kind === "revoked";
  const actions = h("div", { class: "row" },
    h("button", { type: "button", disabled: revoked, onclick: () => rollKey(key) }, "Roll"),
    h("button", { type: "button", class: "danger", disabled: revoked, onclick: () => revokeKey(key) }, "Revoke"),
    h("button", { type: "button", class: "danger", onclick: () => deleteKey(key, error) }, "Delete"));
  const props = h("dl", { class: "props" },
    h("dt", {}, "Type"), h("dd", {}, key.type),
    h("dt", {}, "Token"), h("dd", {}, tokenCell(key)),
    h("dt", {}, "Status"), h("dd", {}, statusBadge(kind, text)),
    h("dt", {}, "Created"), h("dd", {}, when(key.created_at)),
    h("dt", {}, "Created by"), h("dd", {}, byWhom(key.created_by)),
    h("dt", {}, "Last used"), h("dd", {}, when(key.last_used_at)),
    key.expires_at ? [h("dt", {}, "Expires"), h("dd", {}, when(key.expires_at))] : null,
    key.permissions ? [h("dt", {}, "Permissions"), h("dd", {}, key.permissions.join(", "))] : null,
    key.allowed_ips ? [h("dt", {}, "Allowed addresses"), h("dd", {}, key.allowed_ips.join(", "))] : null,
    key.metadata ? [h("dt", {}, "Metadata"), h("dd", {}, h("code", {}, JSON.stringify(key.metadata)))] : null,
    key.revoked_by ? [h("dt", {}, "Revoked by"), h("dd", {}, byWhom(key.revoked_by))] : null,
    h("dt", {}, "Id"), h("dd", {}, h("code", {}, key.id)));
  main.replaceChildren(
    h("p", {}, h("a", { href: back[0] }, `← ${back[1]}`)),
    heading(key.title || "(untitled)"),
    error,
    h("section", { class: "card", "aria-labelledby": "key-details" }, h("h2", { id: "key-details", class: "visually-hidden" }, "Details"), props),
    h("h2", {}, "Title"), rename,
    h("h2", {}, "Actions"), actions,
    key.type === "publishable" ? await channelsOfKey(key, error) : null);
}

async function channelsOfKey(key, error) {
  const linked = key.sales_channels || [];
  const all = (await attempt(error, () => api("GET", "/admin/sales-channels?limit=100&order=name"))) || { sales_channels: [] };
  const free = all.sales_channels.filter((c) => !linked.some((l) => l.id === c.id));
  const link = async (body, done) => {
    if (await attempt(error, () => api("POST", `/admin/api-keys/${key.id}/sales-channels`, body))) {
      say(done);
      route();
    }
  };
  const items = linked.length
    ? h("ul", { class: "plain" }, linked.map((c) => h("li", {}, h("span", {}, c.name, " ", h("code", { class: "muted" }, c.id)),
      h("button", { type: "button", class: "small", "aria-label": `Remove ${c.name}`, onclick: () => link({ remove: [c.id] }, `Removed ${c.name}`) }, "Remove"))))
    : h("p", { class: "muted" }, "This key is not limited to any sales channel yet: a storefront request with it is refused until one is added.");
  const choice = select("channel", free.map((c) => [c.id, c.name]), "");
  const add = h("form", { class: "toolbar", "aria-label": "Add a sales channel" },
    h("div", { class: "grow" }, field("Sales channel", choice)),
    h("div", { class: "field" }, h("button", { type: "submit", disabled: free.length === 0 }, "Add")));
  add.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (choice.value) link({ add: [choice.value] }, `Added ${choice.selectedOptions[0].textContent}`);
  });
  const hint = free.length === 0 ? h("p", { class: "muted" }, "Every sales channel is linked. ", h("a", { href: "#/channels" }, "Create a sales channel")) : null;
  return h("section", { "aria-labelledby": "key-channels" }, h("h2", { id: "key-channels" }, "Sales channels"), items, add, hint);
}

/** The body of a revoke or a roll: `revoke_in` when a delay was chosen, else at once. */
function delayed(choice) {
  const seconds = Number(choice.value);
  return seconds > 0 ? { revoke_in: seconds } : {};
}

async function revokeKey(key) {
  const delay = select("revoke_in", DELAYS, "0");
  const done = await modal(`Revoke ${key.title}?`, [
    h("p", {}, "A revoked key stops authenticating on every node. This cannot be undone."),
    field("When", delay),
  ], {
    confirm: "Revoke",
    danger: true,
    onConfirm: async () => api("POST", `/admin/api-keys/${key.id}/revoke`, delayed(delay)),
  });
  if (done) {
    say(Number(delay.value) > 0 ? `${key.title} will be revoked` : `Revoked ${key.title}`);
    route();
  }
}

async function rollKey(key) {
  const grace = select("revoke_in", [["0", "None: revoke it now"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"]], "3600");
  const rolled = await modal(`Roll ${key.title}?`, [
    h("p", {}, "A new key replaces this one, with the same title and sales channels. The old key keeps working for the grace period, then is revoked."),
    field("Grace period for the old key", grace),
  ], {
    confirm: "Roll",
    danger: true,
    onConfirm: async () => api("POST", `/admin/api-keys/${key.id}/roll`, delayed(grace)),
  });
  if (!rolled) return;
  if (rolled.api_key.type === "secret") await showToken("Your new secret key", rolled.api_key.token);
  say(`Rolled ${key.title}`);
  location.hash = `#/keys/${rolled.api_key.id}`;
}

async function deleteKey(key, error) {
  const deleted = await modal(`Delete ${key.title}?`, [h("p", {}, "The key is removed for good. Only a revoked key can be deleted.")], {
    confirm: "Delete",
    danger: true,
    onConfirm: async () => {
      try {
        return await api("DELETE", `/admin/api-keys/${key.id}`);
      } catch (e) {
        // The refusal is shown on the page, where it stays after the dialog closes.
        if (!e.expired) error.textContent = e.message;
        return null;
      }
    },
  });
  if (deleted) {
    say(`Deleted ${key.title}`);
    location.hash = key.type === "secret" ? "#/secret" : "#/publishable";
  }
}

async function viewChannels(params) {
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const error = alertBox();
  const name = h("input", { name: "name", required: true, maxlength: 256 });
  const description = h("input", { name: "description", maxlength: 1024 });
  const form = h("form", { class: "toolbar card", "aria-label": "Create a sales channel" },
    h("div", { class: "grow" }, field("Name", name)), h("div", { class: "grow" }, field("Description", description)),
    h("div", { class: "field" }, h("button", { type: "submit", class: "primary" }, "Create")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: name.value };
    if (description.value) body.description = description.value;
    if (await attempt(error, () => api("POST", "/admin/sales-channels", body))) {
      say(`Created ${name.value}`);
      route();
    }
  });
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 4 }, "Loading…")));
  const table = h("table", { class: "cards", "aria-label": "Sales channels" },
    h("thead", {}, h("tr", {}, ["Name", "Description", "Status", "Created"].map((t) => h("th", { scope: "col" }, t)))), body);
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  main.replaceChildren(heading("Sales channels"), error, h("h2", {}, "New sales channel"), form, h("h2", {}, "All sales channels"), table, pager);
  const list = await attempt(error, () => api("GET", `/admin/sales-channels${query({ limit: PAGE, offset, order: "name" })}`));
  if (!list) return body.replaceChildren();
  body.replaceChildren(...(list.sales_channels.length ? list.sales_channels.map((c) => h("tr", {},
    h("td", { "data-label": "Name" }, c.name),
    h("td", { "data-label": "Description" }, c.description || h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Status" }, c.is_disabled ? statusBadge("revoked", "disabled") : statusBadge("active", "enabled")),
    h("td", { "data-label": "Created" }, when(c.created_at)))) : [h("tr", {}, h("td", { colspan: 4 }, "No sales channels yet."))]));
  pages(pager, list.offset, list.sales_channels.length, list.count, "channels",
    (next) => (location.hash = `#/channels${query({ offset: next || "" })}`));
}

const RUN_STATES = [["", "All"], ["running", "Running"], ["compensating", "Compensating"], ["done", "Done"], ["reverted", "Reverted"], ["failed", "Failed"]];

function failures(list) {
  return list.length ? h("ul", { class: "steps" }, list.map((f) => h("li", {}, `${f.step}: ${f.error}`))) : h("span", { class: "muted" }, "none");
}

async function viewActivity(params) {
  const stateFilter = params.get("state") || "";
  const error = alertBox();
  const state = select("state", RUN_STATES, stateFilter);
  state.addEventListener("change", () => (location.hash = `#/activity${query({ state: state.value })}`));
  const refresh = h("button", { type: "button", onclick: () => route() }, "Refresh");
  const runsBody = h("tbody", {}, h("tr", {}, h("td", { colspan: 5 }, "Loading…")));
  const eventsBody = h("tbody", {}, h("tr", {}, h("td", { colspan: 4 }, "Loading…")));
  main.replaceChildren(
    h("div", { class: "row" }, heading("Activity"), h("span", { class: "grow" }), refresh),
    h("p", { class: "muted" }, "The newest workflow runs (every change is one) and the events they published, with each subscriber's delivery."),
    error,
    h("h2", { id: "runs" }, "Workflow runs"),
    h("div", { class: "toolbar" }, field("State", state)),
    h("table", { class: "cards", "aria-labelledby": "runs" },
      h("thead", {}, h("tr", {}, ["Started", "Workflow", "State", "Steps", "Errors and conflicts"].map((t) => h("th", { scope: "col" }, t)))), runsBody),
    h("h2", { id: "events" }, "Events"),
    h("table", { class: "cards", "aria-labelledby": "events" },
      h("thead", {}, h("tr", {}, ["Published", "Event", "Object", "Deliveries"].map((t) => h("th", { scope: "col" }, t)))), eventsBody));
  const [runs, events] = await Promise.all([
    attempt(error, () => api("GET", `/admin/workflow-runs${query({ state: stateFilter, limit: 50 })}`)),
    attempt(error, () => api("GET", "/admin/events?limit=50")),
  ]);
  runsBody.replaceChildren(...(runs && runs.workflow_runs.length ? runs.workflow_runs.map(runRow) : [h("tr", {}, h("td", { colspan: 5 }, runs ? "No workflow runs yet." : ""))]));
  eventsBody.replaceChildren(...(events && events.events.length ? events.events.map(eventRow) : [h("tr", {}, h("td", { colspan: 4 }, events ? "No events yet." : ""))]));
}

function runRow(run) {
  const steps = h("ul", { class: "steps" }, run.steps.map((s) =>
    h("li", {}, `${s.step}: ${s.state.replace("_", " ")}`, s.attempts > 1 ? ` (${s.attempts} attempts)` : "", s.error ? ` — ${s.error}` : "")));
  const notes = [];
  if (run.compensations) notes.push(h("p", {}, `${run.compensations} step(s) compensated`));
  return h("tr", {},
    h("td", { "data-label": "Started" }, when(run.created_at)),
    h("td", { "data-label": "Workflow" }, h("code", {}, run.workflow), h("div", { class: "muted mono" }, run.transaction_id)),
    h("td", { "data-label": "State" }, statusBadge(run.state)),
    h("td", { "data-label": "Steps" }, steps),
    h("td", { "data-label": "Errors and conflicts" }, notes, h("div", {}, "Errors: ", failures(run.errors)), h("div", {}, "Conflicts: ", failures(run.conflicts))));
}

function eventRow(event) {
  const deliveries = event.deliveries.length
    ? h("ul", { class: "steps" }, event.deliveries.map((d) => h("li", {},
      h("strong", {}, d.subscriber), ": ", statusBadge(d.state), ` after ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`,
      d.last_error ? h("div", {}, "Last error: ", d.last_error) : null,
      d.state !== "delivered" && d.next_attempt_at ? h("div", {}, "Next try: ", when(d.next_attempt_at)) : null)))
    : h("span", { class: "muted" }, "no subscribers");
  return h("tr", {},
    h("td", { "data-label": "Published" }, when(event.created_at)),
    h("td", { "data-label": "Event" }, h("code", {}, event.name)),
    h("td", { "data-label": "Object" }, h("code", {}, event.data && event.data.id ? event.data.id : "—")),
    h("td", { "data-label": "Deliveries" }, deliveries));
}

// -- routing --------------------------------------------------------------------------------

const ROUTES = [
  [/^\/(publishable|secret)$/, (m, p) => viewKeys(m[1], p)],
  [/^\/keys\/([^/]+)$/, (m) => viewKey(decodeURIComponent(m[1]))],
  [/^\/channels$/, (m, p) => viewChannels(p)],
  [/^\/activity$/, (m, p) => viewActivity(p)],
];

async function route() {
  const hash = location.hash || "#/publishable";
  if (!hash.startsWith("#/")) return; // an in-page anchor such as the skip link
  const [path, search] = hash.slice(1).split("?");
  if (path === "/login") {
    if (session.me) location.hash = "#/publishable";
    else viewLogin();
    return;
  }
  if (!session.me) {
    location.hash = "#/login";
    return;
  }
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.getAttribute("href") === `#${path}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, view] of ROUTES) {
    const m = path.match(re);
    if (m) {
      await view(m, new URLSearchParams(search || ""));
      return;
    }
  }
  location.hash = "#/publishable";
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("DELETE", "/auth/session");
  } catch {
    // Logged out locally either way.
  }
  session.me = null;
  session.loginReason = "You are logged out.";
  location.hash = "#/login";
});

document.querySelector(".skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", route);

(async function start() {
  try {
    await signedIn();
  } catch {
    session.me = null;
  }
  route();
})();
