// keyward dashboard, the pieces every view uses: DOM building (`h` always sets text as text,
// never parses it as HTML), the admin API over the session cookie, and dialogs.

const toast = document.getElementById("toast");

/** Who is signed in, and why the login form is showing. */
export const session = { me: null, loginReason: "" };

// -- building blocks ------------------------------------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let uid = 0;
/** A labelled control: `control` gets an id, the label names it. */
export function field(labelText, control, hint) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  const hintEl = hint ? h("p", { class: "muted", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl);
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

export function say(text) {
  toast.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => (toast.textContent = ""), 4000);
}

export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

/** active, revoking (revoked_at in the future) or revoked. */
export function keyStatus(key) {
  const now = new Date();
  const revokes = key.revoked_at ? new Date(key.revoked_at) : null;
  const expires = key.expires_at ? new Date(key.expires_at) : null;
  if (revokes && revokes <= now) return ["revoked", "revoked"];
  if (expires && expires <= now) return ["revoked", "expired"];
  if (revokes) return ["revoking", `revokes at ${revokes.toLocaleString()}`];
  if (expires) return ["active", `expires at ${expires.toLocaleString()}`];
  return ["active", "active"];
}

export function statusBadge(kind, text = kind) {
  return h("span", { class: `status ${kind}` }, text);
}

export function byWhom(id) {
  if (!id) return h("span", { class: "muted" }, "—");
  if (session.me && id === session.me.id) return `you (${session.me.email})`;
  return h("span", { class: "mono" }, id);
}

export async function copy(text, input) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    if (input) {
      input.select();
      document.execCommand("copy");
    }
  }
  say("Copied to the clipboard");
}

export function copyButton(text, what) {
  return h("button", { type: "button", class: "small", "aria-label": `Copy ${what}`, onclick: () => copy(text) }, "Copy");
}

// -- the API --------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, expired = false) {
    super(message);
    this.status = status;
    /** The session ran out: the login page is already showing the reason. */
    this.expired = expired;
  }
}

export async function api(method, path, body, headers = {}) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The server could not be reached. Check that keyward is running, then try again.");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.status === 401 && session.me && !path.startsWith("/auth/")) {
    expired();
    throw new ApiError(401, "Your session has expired. Log in again.", true);
  }
  if (!res.ok) {
    const message = data && typeof data.message === "string" && data.message ? data.message : `The server answered ${res.status}.`;
    throw new ApiError(res.status, message);
  }
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.append(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function expired() {
  session.me = null;
  session.loginReason = "Your session has expired. Log in again.";
  location.hash = "#/login";
}

/** Runs `work`, showing its failure in `alertEl` (and keeping the page as it was). */
export async function attempt(alertEl, work) {
  alertEl.textContent = "";
  try {
    return await work();
  } catch (e) {
    if (e instanceof ApiError && e.expired) return undefined;
    alertEl.textContent = e.message;
    return undefined;
  }
}

export function alertBox() {
  return h("div", { class: "alert", role: "alert" });
}

// -- dialogs --------------------------------------------------------------------------------

/** A modal dialog; resolves with the confirm button's result, or null when cancelled. */
export function modal(title, body, { confirm, danger = false, cancel = "Cancel", onConfirm }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const error = alertBox();
    const headingId = `d${++uid}`;
    const form = h("form", { method: "dialog" }, body, error);
    const confirmBtn = h("button", { type: "submit", class: danger ? "danger" : "primary" }, confirm);
    const cancelBtn = cancel ? h("button", { type: "button", onclick: () => close(null) }, cancel) : null;
    form.append(h("div", { class: "actions" }, cancelBtn, confirmBtn));
    const dlg = h("dialog", { "aria-labelledby": headingId }, h("h2", { id: headingId }, title), form);
    let settled = false;
    function close(value) {
      if (settled) return;
      settled = true;
      dlg.close();
      dlg.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(value);
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      confirmBtn.disabled = true;
      const value = await attempt(error, async () => (onConfirm ? await onConfirm(form) : true));
      confirmBtn.disabled = false;
      if (value !== undefined) close(value);
    });
    dlg.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      close(null);
    });
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector("input:not([readonly]), select, textarea");
    (first || confirmBtn).focus();
  });
}

/** Shows a new secret token once. */
export function showToken(title, token) {
  const input = h("input", { readonly: true, value: token, spellcheck: "false", autocomplete: "off" });
  input.addEventListener("focus", () => input.select());
  return modal(
    title,
    [
      h("p", { class: "notice" }, "Copy this token now and store it somewhere safe. It will not be shown again: keyward keeps only its digest."),
      field("Token", input),
      h("button", { type: "button", onclick: () => copy(token, input) }, "Copy"),
    ],
    { confirm: "Done", cancel: null },
  );
}

export const DELAYS = [
  ["0", "Now"],
  ["3600", "In 1 hour"],
  ["86400", "In 24 hours"],
  ["604800", "In 7 days"],
];
