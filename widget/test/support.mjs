// Shared by the browser tests: a real embedded server (`chatroom`)
// on free loopback ports with its secrets in a temporary directory, that can
// be stopped and started again on the same ports; headless Chromium; and
// small readers of the widget's shadow DOM.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const widgetDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const binDir = resolve(widgetDir, process.env.CHATROOM_BIN_DIR ?? "../target/debug");
const chromiumPath = process.env.CHATROOM_CHROMIUM ?? "/usr/bin/chromium";
export const artifacts = join(widgetDir, "test-artifacts");

/** How long any one expected state may take before a test fails. */
export const PATIENCE_MS = 20_000;

/** A loopback TCP port nobody listens on right now. */
async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.listen(0, "127.0.0.1", ok).once("error", fail));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/** An embedded server of its own: ports, secrets and state in a temp dir. */
export class Server {
  static async start() {
    const binary = join(binDir, "chatroom");
    if (!existsSync(binary)) {
      throw new Error(`${binary} is missing: build it with \`cargo build -p chatroom-embedded\` or set CHATROOM_BIN_DIR`);
    }
    const server = new Server(binary, await freePort(), await freePort());
    await server.launch();
    return server;
  }

  constructor(binary, wsPort, httpPort) {
    this.binary = binary;
    this.wsPort = wsPort;
    this.httpPort = httpPort;
    this.dir = mkdtempSync(join(tmpdir(), "chatroom-widget-test-"));
    mkdirSync(join(this.dir, "state"));
    this.process = null;
    this.exited = null;
  }

  get http() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** The demo page for `user` in `room`. */
  demo(room, user) {
    return `${this.http}/demo?room=${encodeURIComponent(room)}&user=${encodeURIComponent(user)}`;
  }

  /** Starts the process (again, on the same ports and secret files) and waits until it is ready. */
  async launch() {
    const log = openSync(join(this.dir, "server.log"), "a");
    const child = spawn(
      this.binary,
      [
        "--ws-listen",
        `127.0.0.1:${this.wsPort}`,
        "--http-listen",
        `127.0.0.1:${this.httpPort}`,
        "--no-quic",
        "--token-secret-file",
        join(this.dir, "token-secret"),
        "--admin-token-file",
        join(this.dir, "admin-token"),
        // Pongs carry member counts: a short heartbeat shows them sooner.
        "--heartbeat-ms",
        "2000",
        "--drain-grace-ms",
        "1000",
        // The flood test sends a whole room's flood from one page: only the
        // room's own limits apply here, as in the load harness's servers.
        "--session-send-per-s",
        "0",
      ],
      { env: { ...process.env, XDG_STATE_HOME: join(this.dir, "state") }, stdio: ["ignore", log, log] },
    );
    this.process = child;
    this.exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
    const deadline = Date.now() + PATIENCE_MS;
    let gone = false;
    this.exited.then(() => {
      gone = true;
    });
    // Polling a readiness endpoint: there is no event to await across processes.
    while (Date.now() < deadline && !gone) {
      const ready = await fetch(`${this.http}/readyz`).then(
        (response) => response.ok,
        () => false,
      );
      if (ready) {
        return;
      }
      await new Promise((ok) => setTimeout(ok, 50));
    }
    throw new Error(`the embedded server did not become ready; its log:\n${this.log()}`);
  }

  /** SIGTERM, and waits for the process to end (it drains first). */
  async stop() {
    if (this.process === null) {
      return;
    }
    this.process.kill("SIGTERM");
    const { code, signal } = await this.exited;
    this.process = null;
    if (code !== 0) {
      throw new Error(`the embedded server exited with ${code ?? signal}; its log:\n${this.log()}`);
    }
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  log() {
    return readFileSync(join(this.dir, "server.log"), "utf8");
  }

  /** Calls the admin API; resolves with the parsed JSON answer. */
  async admin(method, path, body) {
    const token = readFileSync(join(this.dir, "admin-token"), "utf8").trim();
    const response = await fetch(`${this.http}/admin/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`${method} ${path}: ${response.status} ${text}`);
    }
    return text === "" ? null : JSON.parse(text);
  }

  /**
   * A client token for `user`, signed with the server's secret (HS256),
   * valid for `ttlS` seconds (negative: expired that long ago), with any
   * `claims` the app's backend adds (rooms, room_roles, info).
   */
  token(user, { ttlS = 3600, claims = {} } = {}) {
    const secret = readFileSync(join(this.dir, "token-secret"), "utf8").trim();
    const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const body = { sub: user, exp: Math.floor(Date.now() / 1000) + ttlS, roles: [], ...claims };
    const head = `${part({ alg: "HS256", typ: "JWT" })}.${part(body)}`;
    return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
  }
}

/** Headless Chromium as the tests run it (Debian's, no sandbox, no background traffic). */
export async function launchBrowser() {
  mkdirSync(artifacts, { recursive: true });
  // Playwright gives every launch a fresh temporary profile (--user-data-dir).
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/** A page of its own (own context: own storage) at `url`, with the widget live. */
export async function openWidget(browser, url) {
  const context = await browser.newContext({ viewport: { width: 960, height: 560 }, colorScheme: "light" });
  context.setDefaultTimeout(PATIENCE_MS);
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  // Counts every message event by text, to tell duplicates from re-renders.
  await page.addInitScript(() => {
    window.__seen = new Map();
    document.addEventListener("chatroom:message", (event) => {
      const { text } = event.detail;
      window.__seen.set(text, (window.__seen.get(text) ?? 0) + 1);
    });
  });
  await page.goto(url);
  await widgetState(page, "live");
  return page;
}

/** Waits until the widget's connection state is `state`. */
export async function widgetState(page, state) {
  await page.locator(`chatroom-widget[data-state="${state}"]`).waitFor();
}

/** The list's entries: `{ key, className, sender, text }` for each, in order. */
export async function entries(page) {
  return page.locator("chatroom-widget").evaluate((widget) =>
    Array.from(widget.shadowRoot.querySelector(".log").children, (li) => ({
      key: li.dataset.key ?? null,
      className: li.className,
      sender: li.querySelector(".sender")?.textContent ?? null,
      text: li.querySelector(".text")?.textContent ?? li.textContent,
    })),
  );
}

/** How many `chatroom:message` events each text has had on `page`. */
export async function seen(page) {
  return new Map(await page.evaluate(() => Array.from(window.__seen)));
}

/** A locator for the list entry showing exactly `text`. */
export function entry(page, text) {
  return page.locator("chatroom-widget li.msg").filter({ has: page.getByText(text, { exact: true }) });
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}
