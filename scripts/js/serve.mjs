// Starts a real `keyward serve` on a fresh SQLite file with one admin user, for the JavaScript
// suites (compat/js-sdk, e2e). No dependencies beyond Node itself.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

/** The binary the suites drive: KEYWARD_BIN, else the debug build of this checkout. */
export const BIN = process.env.KEYWARD_BIN ?? resolve(import.meta.dirname, "../../target/debug/keyward");

/**
 * Creates the user `email`/`password` and starts `keyward serve` on a free port. Resolves to
 * `{ base, stop }`: the base URL without a trailing slash, and a function that stops the server
 * and removes its database.
 */
export async function startKeyward({ name, email, password, jwtSecret }) {
  const dir = mkdtempSync(join(tmpdir(), `keyward-${name}-`));
  const env = { ...process.env, KEYWARD_DATABASE_URL: `sqlite://${join(dir, "keyward.db")}`, KEYWARD_JWT_SECRET: jwtSecret };
  execFileSync(BIN, ["user", "create", "--email", email, "--password", password], { env });
  const server = spawn(BIN, ["serve", "--listen", "127.0.0.1:0"], { env, stdio: ["ignore", "pipe", "inherit"] });
  const first = await new Promise((ok, fail) => {
    server.once("exit", (code) => fail(new Error(`keyward serve exited with ${code}`)));
    createInterface({ input: server.stdout }).once("line", ok);
  });
  const base = first.match(/http:\/\/\S+/)[0].replace(/\/$/, "");
  const stop = () => {
    server.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  return { base, stop };
}
