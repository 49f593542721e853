// End-to-end tests of the demo chat client served by the gateway at `/`,
// in headless Debian Chromium driven by playwright-core.
//
// Starts the gateway itself (GATEWAY_BIN, default ../target/debug/gateway) on
// a free port with a temporary data dir, restarts it mid-test (same data dir,
// port and --jwt-secret), and stops it at the end. Screenshots and server logs
// go to e2e/artifacts/. Prints one line per step and ends with
// "N passed, N failed[, N skipped]"; exits non-zero on any failure.
//
// Run it through e2e/run.sh, which installs what it needs and builds the binary.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const gatewayBin = process.env.GATEWAY_BIN || path.join(targetDir, "debug", "gateway");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const artifacts = path.join(here, "artifacts");
const TOTAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 300000);

fs.rmSync(artifacts, { recursive: true, force: true });
fs.mkdirSync(artifacts, { recursive: true });

// ------------------------------------------------------------------ harness

let passed = 0;
let failed = 0;
let skipped = 0;
let stopRest = false;
const pages = new Map(); // name -> page, for failure screenshots

async function step(name, fn) {
  if (stopRest) {
    skipped += 1;
    console.log(`skip - ${name}`);
    return;
  }
  const started = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    failed += 1;
    stopRest = true; // later steps build on this one
    console.log(`not ok - ${name} (${Date.now() - started} ms)`);
    console.log(String(err && err.stack ? err.stack : err).replace(/^/gm, "    "));
    for (const [pageName, page] of pages) {
      if (page.isClosed()) continue;
      await page
        .screenshot({ path: path.join(artifacts, `failure-${pageName}.png`), fullPage: true })
        .catch(() => {});
    }
  }
}

function summary() {
  return `${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : "");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `fn` until it returns a truthy value; fails with `what` and the last value. */
async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${fmt(last)}`);
    }
    await sleep(100);
  }
}

function fmt(value) {
  if (value instanceof Error) return value.message;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// ------------------------------------------------------------------- server

const children = new Set();
process.on("exit", () => {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    console.log(`interrupted by ${signal}`);
    process.exit(130);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

class Gateway {
  constructor({ port, dataDir, secret, extraArgs = [], name }) {
    Object.assign(this, { port, dataDir, secret, extraArgs, name });
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
    this.starts = 0;
  }

  async start(extraArgs = this.extraArgs) {
    this.starts += 1;
    const logPath = path.join(artifacts, `${this.name}-${this.starts}.log`);
    for (let attempt = 1; ; attempt++) {
      const log = fs.openSync(logPath, "a");
      const args = [
        "--listen", `127.0.0.1:${this.port}`,
        "--data-dir", this.dataDir,
        "--jwt-secret", this.secret,
        "--drain-secs", "2",
        ...extraArgs,
      ];
      const child = spawn(gatewayBin, args, {
        stdio: ["ignore", log, log],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
      });
      fs.closeSync(log);
      children.add(child);
      const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
      child.exitedPromise = exited;
      exited.then(() => children.delete(child));
      let exitInfo = null;
      exited.then((info) => (exitInfo = info));
      const deadline = Date.now() + 30000;
      while (Date.now() < deadline && !exitInfo) {
        try {
          const resp = await fetch(`${this.url}/readyz`);
          if (resp.ok) {
            this.child = child;
            return;
          }
        } catch {
          /* not listening yet */
        }
        await sleep(100);
      }
      const tail = fs.readFileSync(logPath, "utf8").split("\n").slice(-15).join("\n");
      if (!exitInfo) child.kill("SIGKILL");
      // The port can be briefly busy right after the previous process exited.
      if (attempt < 3 && /address already in use/i.test(tail)) {
        await sleep(500);
        continue;
      }
      throw new Error(`gateway ${this.name} did not become ready (exit ${fmt(exitInfo)}):\n${tail}`);
    }
  }

  /** Graceful stop (SIGTERM: drain, goaway, exit 0); resolves with the exit status. */
  async stop() {
    const child = this.child;
    if (!child) return null;
    this.child = null;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
    const info = await child.exitedPromise;
    clearTimeout(timer);
    return info;
  }
}

async function devToken(baseUrl, user) {
  const resp = await fetch(`${baseUrl}/v1/dev/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  assert.equal(resp.status, 200, `dev token for ${user}`);
  return (await resp.json()).token;
}

/** Sends over REST, retrying 429/503 after Retry-After with the same client_msg_id. */
async function restSend(baseUrl, token, convId, clientMsgId, body) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const resp = await fetch(`${baseUrl}/v1/conversations/${encodeURIComponent(convId)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_msg_id: clientMsgId, body }),
    });
    if (resp.status === 429 || resp.status === 503) {
      const secs = Number(resp.headers.get("retry-after") || "1");
      await sleep(Math.max(100, secs * 1000));
      continue;
    }
    const text = await resp.text();
    assert.equal(resp.status, 200, `REST send: ${text}`);
    return JSON.parse(text);
  }
  throw new Error("REST send kept being refused");
}

// ------------------------------------------------------------- page helpers

const BROWSER_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const pageErrors = [];

async function newUserPage(browser, name, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...contextOptions });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (err) => pageErrors.push(`${name}: ${err.message}`));
  // Every WebSocket frame, to check retries keep their client_msg_id.
  page.frames_sent = [];
  page.frames_received = [];
  // Both directions in the order they went.
  page.frames = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => {
      const frame = parseFrame(f.payload);
      page.frames_sent.push(frame);
      page.frames.push({ dir: "out", frame, at: Date.now() });
    });
    ws.on("framereceived", (f) => {
      const frame = parseFrame(f.payload);
      page.frames_received.push(frame);
      page.frames.push({ dir: "in", frame, at: Date.now() });
    });
  });
  pages.set(name, page);
  return { context, page };
}

function parseFrame(payload) {
  try {
    return JSON.parse(String(payload));
  } catch {
    return { raw: String(payload) };
  }
}

async function signIn(page, baseUrl, user) {
  await page.goto(`${baseUrl}/`);
  await page.getByLabel("User name", { exact: true }).fill(user);
  await page.getByLabel("User name", { exact: true }).press("Enter");
  await page.locator('#conn[data-state="online"]').waitFor();
  assert.equal(await page.locator("#me-name").textContent(), user);
}

const bodies = (page) => page.$$eval("#message-list .msg-body", (els) => els.map((e) => e.textContent));

async function expectBodies(page, expected, what, timeoutMs = 15000) {
  await until(`${what}: ${fmt(expected)}`, async () => {
    const got = await bodies(page);
    return JSON.stringify(got) === JSON.stringify(expected) ? got : Promise.reject(new Error(fmt(got)));
  }, timeoutMs);
}

/** Types a message and sends it with the Enter key. */
async function sendByKeyboard(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

async function expectAllSent(page, timeoutMs = 15000) {
  await until("every own message to be sent", async () =>
    (await page.locator('#message-list .msg.mine:not([data-state="sent"])').count()) === 0
    && (await page.locator('#message-list .msg.mine[data-state="sent"]').count()) > 0, timeoutMs);
}

function convButton(page, name) {
  return page.locator("#conv-list button").filter({
    has: page.locator(".conv-name", { hasText: new RegExp(`^(# )?${name}$`) }),
  });
}

async function bannerVisible(page) {
  return page.locator("#banner").isVisible();
}

// -------------------------------------------------------------------- tests

async function main() {
  assert.ok(fs.existsSync(gatewayBin), `no gateway binary at ${gatewayBin} (run e2e/run.sh)`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "chat-e2e-"));
  const secret = `e2e-${Math.random().toString(16).slice(2)}${Date.now()}`;
  const server = new Gateway({ port: await freePort(), dataDir: path.join(tmp, "data"), secret, name: "server" });
  let browser;

  try {
    await step("the gateway starts (debug build, temp data dir, free port)", () => server.start());

    await step("the client is served at / with its assets and the right content types", async () => {
      const expect = { "/": "text/html", "/app.js": "text/javascript", "/app.css": "text/css" };
      for (const [p, type] of Object.entries(expect)) {
        const resp = await fetch(server.url + p);
        assert.equal(resp.status, 200, p);
        assert.match(resp.headers.get("content-type"), new RegExp(`^${type}`), p);
        assert.ok((await resp.text()).length > 200, `${p} has content`);
      }
    });

    await step("without dev auth, / and the assets answer 404", async () => {
      const off = new Gateway({
        port: await freePort(), dataDir: path.join(tmp, "data-off"), secret, name: "no-dev-auth",
        extraArgs: ["--dev-auth", "false"],
      });
      await off.start();
      try {
        for (const p of ["/", "/app.js", "/app.css"]) {
          assert.equal((await fetch(off.url + p)).status, 404, p);
        }
      } finally {
        await off.stop();
      }
    });

    await step("headless chromium starts", async () => {
      browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: BROWSER_ARGS });
    });

    let alice;
    let bob;
    await step("alice and bob sign in, each in a browser context of their own", async () => {
      alice = await newUserPage(browser, "alice");
      bob = await newUserPage(browser, "bob");
      await signIn(alice.page, server.url, "alice");
      await signIn(bob.page, server.url, "bob");
      assert.equal(await bannerVisible(alice.page), false, "no banner while connected");
    });

    const dm = [];
    await step("alice opens a direct chat with bob by user name and sends with the Enter key", async () => {
      const page = alice.page;
      await page.getByLabel("Direct chat with (user name)").fill("bob");
      await page.getByLabel("Direct chat with (user name)").press("Enter");
      await until("the chat title to name bob", async () => (await page.locator("#chat-title").textContent()) === "bob");
      assert.equal(await page.evaluate(() => document.activeElement.id), "composer-input", "focus moves to the message box");
      dm.push("hi bob, this is alice (1)");
      await sendByKeyboard(page, dm[0]);
      await expectAllSent(page);
      await expectBodies(page, dm, "alice's view");
      assert.equal(await page.getByLabel("Message", { exact: true }).inputValue(), "", "the composer is cleared");
    });

    await step("bob sees the conversation arrive live (unread badge), opens it, replies with the Send button", async () => {
      const page = bob.page;
      const item = convButton(page, "alice");
      await item.waitFor();
      await until("an unread badge", async () => (await item.locator(".badge").textContent()) === "1");
      await item.click();
      await expectBodies(page, dm, "bob's view");
      dm.push("hello alice, bob here (2)");
      await page.getByLabel("Message", { exact: true }).fill(dm[1]);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await expectAllSent(page);
      await expectBodies(page, dm, "bob's view after replying");
    });

    await step("alice receives bob's reply live", async () => {
      await expectBodies(alice.page, dm, "alice's view");
      const mine = await alice.page.locator("#message-list .msg.mine .msg-body").allTextContents();
      assert.deepEqual(mine, [dm[0]], "only alice's own message is styled as hers");
    });

    await step("bob's reply reached alice inside its notify (protocol 1.1) and was shown without a sync", async () => {
      const log = alice.page.frames;
      const at = log.findIndex(
        (x) => x.dir === "in" && x.frame.type === "notify" && (x.frame.entries || []).some((e) => e.body === dm[1]),
      );
      assert.ok(at >= 0, "a notify carried bob's reply");
      const syncs = log.slice(at).filter((x) => x.dir === "out" && x.frame.type === "sync");
      assert.deepEqual(syncs, [], "no sync after that notify");
    });

    await step("bob types in the direct chat: alice sees \"bob is typing...\" (protocol 1.1), and it goes away", async () => {
      // Bob's reply just sent one: indicators go at most every 3 s.
      const last = bob.page.frames.filter((x) => x.dir === "out" && x.frame.type === "typing").pop();
      if (last) await new Promise((r) => setTimeout(r, Math.max(0, last.at + 3100 - Date.now())));
      const before = bob.page.frames_sent.length;
      await bob.page.getByLabel("Message", { exact: true }).fill("I am writing someth");
      await until("alice to see bob typing", async () =>
        (await alice.page.locator("#typing").textContent()) === "bob is typing...");
      const typed = bob.page.frames_sent.slice(before).filter((f) => f.type === "typing");
      assert.equal(typed.length, 1, "one indicator for the burst of input");
      assert.equal(typed[0].conv_id, "dm:alice:bob");
      await bob.page.getByLabel("Message", { exact: true }).fill("");
      await until("the indicator to go away", async () =>
        (await alice.page.locator("#typing").textContent()) === "", 8000);
    });

    const bobsDot = () => convButton(alice.page, "bob").locator(".presence-dot");
    await step("alice sees bob online (protocol 1.1 presence): a green dot and \"online\" under the chat title", async () => {
      await until("bob's dot to be online", async () => (await bobsDot().getAttribute("class")) === "presence-dot online");
      assert.match(await alice.page.locator("#chat-sub").textContent(), /online/);
    });

    await step("bob goes offline (context closed): alice sees \"last seen\"; she sends three messages while he is away", async () => {
      await bob.context.close();
      pages.delete("bob");
      await until("bob's dot to go grey", async () => (await bobsDot().getAttribute("class")) === "presence-dot");
      assert.match(await alice.page.locator("#chat-sub").textContent(), /last seen/);
      for (let i = 3; i <= 5; i++) {
        dm.push(`while bob is away (${i})`);
        await sendByKeyboard(alice.page, dm[dm.length - 1]);
      }
      await expectAllSent(alice.page);
      await expectBodies(alice.page, dm, "alice's view");
    });

    let bob2;
    await step("bob comes back on a phone-sized screen (new context) and sees every message once, in order", async () => {
      bob2 = await newUserPage(browser, "bob-phone", {
        viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
      });
      const page = bob2.page;
      await signIn(page, server.url, "bob");
      const item = convButton(page, "alice");
      await item.waitFor();
      assert.equal(await convButton(page, "alice").count(), 1, "one conversation with alice");
      await item.click();
      await expectBodies(page, dm, "bob's view after coming back");
      assert.equal(await page.locator("#sidebar").isVisible(), false, "one pane at a time on a phone");
      await sleep(1000); // any late sync page must not duplicate anything
      await expectBodies(page, dm, "bob's view a second later");
      const seqs = await page.$$eval("#message-list .msg", (els) => els.map((e) => Number(e.dataset.convSeq)));
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "conv_seq ascending");
      assert.equal(new Set(seqs).size, seqs.length, "no conv_seq twice");
    });

    await step("alice edits one of her messages and recalls another (protocol 1.1): both views show them changed in place", async () => {
      const page = alice.page;
      const mine = (text) => page.locator("#message-list .msg.mine")
        .filter({ has: page.locator(".msg-body", { hasText: text }) });
      const [edited, recalled] = [dm.length - 1, dm.length - 2];
      page.once("dialog", (dialog) => dialog.accept("while bob was away (edited)"));
      await mine(dm[edited]).getByRole("button", { name: "Edit" }).click();
      await mine(dm[recalled]).getByRole("button", { name: "Recall" }).click();
      dm[edited] = "while bob was away (edited)";
      dm[recalled] = "message recalled";
      for (const [who, view] of [["alice", page], ["bob", bob2.page]]) {
        await expectBodies(view, dm, `${who}'s view after the edit and the recall`);
        assert.equal(await view.locator("#message-list .msg.edited").count(), 1, "one message marked edited");
        assert.equal(await view.locator("#message-list .msg.recalled").count(), 1, "one message marked recalled");
      }
      const sent = page.frames_sent.filter((f) => f.type === "recall" || f.type === "edit");
      assert.deepEqual(sent.map((f) => f.type), ["edit", "recall"]);
      assert.equal(await mine(dm[edited]).getByRole("button", { name: "Recall" }).isVisible(), true,
        "an edited message can still be recalled");
      assert.equal(await page.locator("#message-list .msg.recalled button:visible").count(), 0,
        "a recalled message offers nothing");
    });

    await step("read receipts (protocol 1.1): bob's open chat marks alice's messages read, she sees \"Read\"; after a reload bob's unread count comes from the server", async () => {
      const page = alice.page;
      const lastOfMine = () => page.locator("#message-list .msg.mine").last();
      await until("alice's newest message to show Read", async () =>
        (await lastOfMine().getAttribute("data-read")) === "true");
      assert.equal(await lastOfMine().locator(".msg-status").textContent(), "Read");
      const reads = bob2.page.frames_sent.filter((f) => f.type === "read");
      assert.ok(reads.length >= 1, "bob's phone sent a read");
      assert.ok(reads.every((f) => f.conv_id === "dm:alice:bob"), "for the chat it showed");

      await bob2.page.locator("#back").click();
      for (const text of ["for later (a)", "for later (b)"]) {
        dm.push(text);
        await sendByKeyboard(page, text);
      }
      await expectAllSent(page);
      assert.equal(await lastOfMine().getAttribute("data-read"), "false", "not read yet");
      const badge = () => convButton(bob2.page, "alice").locator(".badge");
      await until("bob's badge to count 2", async () => (await badge().textContent()) === "2");
      await bob2.page.reload();
      // This tab saw them arrive before the reload; only the server can count them now.
      await until("the badge after the reload", async () => (await badge().textContent()) === "2");
      await convButton(bob2.page, "alice").click();
      await expectBodies(bob2.page, dm, "bob's view after the reload");
      await until("alice to see her newest read", async () =>
        (await lastOfMine().getAttribute("data-read")) === "true");
      assert.equal(await badge().count(), 0, "no badge once the chat is open");
    });

    const group = ["team hello from alice"];
    await step("alice creates a group with bob and carol; bob sees it appear and reads the message", async () => {
      const page = alice.page;
      await page.locator("#group-details summary").click();
      await page.getByLabel("Group name").fill("team");
      await page.getByLabel("Members (user names, comma separated)").fill("bob, carol");
      await page.getByRole("button", { name: "Create group" }).click();
      await until("the group to open", async () => (await page.locator("#chat-title").textContent()) === "# team");
      await sendByKeyboard(page, group[0]);
      await expectAllSent(page);

      const phone = bob2.page;
      await phone.getByRole("button", { name: "Back to conversations" }).click();
      const item = convButton(phone, "team");
      await item.waitFor();
      await until("an unread badge on the group", async () => (await item.locator(".badge").textContent()) === "1");
      await item.click();
      await expectBodies(phone, group, "bob's group view");
    });

    await step("history: after a reload (seq kept in localStorage) the group shows the newest 50, older ones load on scrolling up", async () => {
      const page = alice.page;
      const carol = await devToken(server.url, "carol");
      const convId = await page.evaluate(() => sessionStorage.getItem("chat.open"));
      assert.match(convId, /^g:/);
      for (let i = 1; i <= 70; i++) {
        const body = `bulk ${i}`;
        group.push(body);
        await restSend(server.url, carol, convId, `bulk-${i}`, body);
      }
      await expectBodies(page, group, "alice's live group view");
      const storedSeq = await page.evaluate(() =>
        Object.entries(localStorage).find(([k]) => k.startsWith("chat.seq.alice."))?.[1]);
      assert.ok(Number(storedSeq) > 0, `a stored seq (${storedSeq})`);

      await page.reload();
      await page.locator('#conn[data-state="online"]').waitFor();
      assert.equal(await page.locator("#chat-title").textContent(), "# team", "the open conversation survives a reload");
      await expectBodies(page, group.slice(-50), "the newest page only");
      await page.locator("#messages").evaluate((el) => {
        el.scrollTop = 0;
      });
      await expectBodies(page, group, "every message after paging up");
      await until("the beginning marker", async () =>
        (await page.locator("#history-status").textContent()) === "Beginning of the conversation");
    });

    await step("the server restarts: both pages show the banner, reconnect by themselves, hide it, and send again", async () => {
      const page = alice.page;
      const phone = bob2.page;
      await convButton(page, "bob").click();
      await expectBodies(page, dm, "alice's DM view");
      await phone.getByRole("button", { name: "Back to conversations" }).click();
      await convButton(phone, "alice").click();
      await expectBodies(phone, dm, "bob's DM view");

      const exit = await server.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, "graceful shutdown exits 0");
      assert.ok(page.frames_received.some((f) => f.type === "goaway"), "alice got goaway");
      await until("the banner on alice's page", () => bannerVisible(page), 10000);
      await until("the banner on bob's page", () => bannerVisible(phone), 10000);
      assert.match(await page.locator("#banner").textContent(), /Disconnected/);

      // Typed while the server is down: waits, then goes out after the reconnect.
      dm.push("typed while the server was down (6)");
      await sendByKeyboard(page, dm[dm.length - 1]);
      await until("the offline message to wait", async () =>
        (await page.locator('#message-list .msg.mine[data-state="sending"]').count()) === 1);
      await page.screenshot({ path: path.join(artifacts, "disconnected-alice.png") });

      // Same data dir, port and secret; a tight send rate limit this time.
      await server.start(["--send-rate", "4", "--send-burst", "3"]);
      await until("alice's banner to hide", async () => !(await bannerVisible(page)), 30000);
      await until("bob's banner to hide", async () => !(await bannerVisible(phone)), 30000);
      await page.locator('#conn[data-state="online"]').waitFor();
      await expectAllSent(page);
      await expectBodies(phone, dm, "bob's view after the restart");

      dm.push("bob again after the restart (7)");
      await sendByKeyboard(phone, dm[dm.length - 1]);
      await expectAllSent(phone);
      await expectBodies(page, dm, "alice's view after the restart");
      await page.screenshot({ path: path.join(artifacts, "chat-alice-desktop.png") });
    });

    await step("rate-limited sends are retried with the same client_msg_id and arrive once, in order", async () => {
      const page = alice.page;
      const burst = [];
      for (let i = 1; i <= 8; i++) {
        burst.push(`quick ${i}`);
        await sendByKeyboard(page, burst[burst.length - 1]);
      }
      dm.push(...burst);
      await expectAllSent(page, 30000);
      await expectBodies(page, dm, "alice's view");
      await expectBodies(bob2.page, dm, "bob's view");
      const limited = page.frames_received.filter((f) => f.type === "error" && f.code === "rate_limited");
      assert.ok(limited.length > 0, "the server refused some sends with rate_limited");
      const sentByRid = new Map(page.frames_sent.filter((f) => f.type === "send").map((f) => [f.rid, f]));
      for (const err of limited) {
        const refused = sentByRid.get(err.rid);
        assert.ok(refused, `the refused send (rid ${err.rid})`);
        const retries = page.frames_sent.filter((f) => f.type === "send" && f.client_msg_id === refused.client_msg_id);
        assert.ok(retries.length >= 2, `"${refused.body}" was sent again with client_msg_id ${refused.client_msg_id}`);
      }
    });

    await step("a send whose ack is lost is resent after the reconnect with the same client_msg_id, and shows once", async () => {
      // dave's socket goes through a proxy in the test that swallows one ack
      // and closes the page's side, as a network failure would. The notify
      // of dave's own inbox that comes just before the ack is swallowed too:
      // it carries the stored entry (protocol 1.1), which would tell the page
      // that its send landed without the ack.
      const dave = await newUserPage(browser, "dave");
      const proxy = { sent: [], received: [], armed: false, dropped: null };
      await dave.page.routeWebSocket(/\/v1\/ws/, (ws) => {
        const upstream = ws.connectToServer();
        ws.onMessage((message) => {
          proxy.sent.push(parseFrame(message));
          upstream.send(message);
        });
        upstream.onMessage((message) => {
          const frame = parseFrame(message);
          proxy.received.push(frame);
          if (proxy.armed && !proxy.dropped && frame.type === "notify") return;
          if (proxy.armed && !proxy.dropped && frame.type === "ack") {
            proxy.dropped = frame;
            ws.close({ code: 4001, reason: "test: connection lost before the ack" });
            return;
          }
          ws.send(message);
        });
      });
      await signIn(dave.page, server.url, "dave");
      await dave.page.getByLabel("Direct chat with (user name)").fill("alice");
      await dave.page.getByLabel("Direct chat with (user name)").press("Enter");
      proxy.armed = true;
      const text = "hi alice, dave here; my first ack got lost";
      await sendByKeyboard(dave.page, text);
      await until("the ack to be dropped", async () => proxy.dropped);
      await expectAllSent(dave.page, 20000);
      await expectBodies(dave.page, [text], "dave's view");
      const sends = proxy.sent.filter((f) => f.type === "send");
      assert.equal(sends.length, 2, "sent twice: before and after the reconnect");
      assert.equal(sends[0].client_msg_id, sends[1].client_msg_id, "with the same client_msg_id");
      const acks = proxy.received.filter((f) => f.type === "ack");
      assert.equal(acks.length, 2);
      assert.equal(acks[0].conv_seq, acks[1].conv_seq, "the retry got the same ack (stored once)");

      const page = alice.page;
      const item = convButton(page, "dave");
      await item.waitFor();
      await item.click();
      await expectBodies(page, [text], "alice's view of dave's chat");
      await sleep(500);
      await expectBodies(page, [text], "still once");
      await dave.context.close();
      pages.delete("dave");
      await convButton(page, "bob").click();
      await expectBodies(page, dm, "alice's DM with bob");
    });

    await step("screenshot of the phone-sized chat view", async () => {
      await bob2.page.screenshot({ path: path.join(artifacts, "chat-bob-phone.png") });
      for (const f of ["chat-alice-desktop.png", "chat-bob-phone.png"]) {
        assert.ok(fs.statSync(path.join(artifacts, f)).size > 10000, f);
      }
    });

    await step("no uncaught errors in the pages", async () => {
      assert.deepEqual(pageErrors, []);
    });
  } finally {
    if (browser) await browser.close().catch(() => {});
    await server.stop().catch(() => {});
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.log(`not ok - the whole run took longer than ${TOTAL_TIMEOUT_MS} ms`);
  failed += 1;
  console.log(summary());
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

try {
  await main();
} catch (err) {
  failed += 1;
  console.log(`not ok - harness error\n${String(err.stack || err).replace(/^/gm, "    ")}`);
}
console.log(`artifacts: ${path.relative(process.cwd(), artifacts) || artifacts}`);
console.log(summary());
process.exit(failed ? 1 : 0);
