// The browser fan-out proof's runner (fanout_test.go): N pages of the full SDK
// (WebChannel) listening to one shared query through the proxy, beside a page listening
// directly to the emulator, while a writer page changes the data step by step. A step is
// settled when every page's latest server snapshot equals the model's state; after a
// quiet period each page's distinct server states during the step are recorded. Prints
//
//   {"steps": [{"name", "expected", "seen": {PAGE: [state...]}, "timedOut": [PAGE...]}],
//    "failedRequests": [...], "consoleErrors": [...]}
//
// Usage: node fanout.mjs CONFIG_JSON, CONFIG_JSON being
//
//   {"chromium": PATH, "projectId": "p", "direct": {"host", "port"},
//    "proxied": {"host", "port"}, "pages": 5, "longPolling": false}

import { build } from "esbuild";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { Model, apply, key, seed, steps } from "./page/fanout-model.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(process.argv[2] || "{}");
const STEP_TIMEOUT_MS = 30000;
const QUIET_MS = 500;
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

const bundle = await build({
  entryPoints: [join(here, "page/fanout.mjs")], bundle: true, format: "esm", platform: "browser",
  target: "es2020", write: false, outdir: "/page", logLevel: "error",
});
const js = bundle.outputFiles[0].text;
const server = http.createServer((req, res) => {
  if (req.url.startsWith("/fanout.js")) {
    res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" });
    return res.end(js);
  }
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><meta charset="utf-8"><title>fanout</title><script type="module" src="/fanout.js"></script>`);
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const profile = mkdtempSync(join(tmpdir(), "harvest-fanout-"));
const browser = await puppeteer.launch({
  executablePath: cfg.chromium, headless: true, userDataDir: profile, protocolTimeout: 5 * 60 * 1000,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    // Background tabs must not be throttled: every page listens at once.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"],
});
const failedRequests = [];
const consoleErrors = [];

// open is a page of its own browser context (its own socket pool: Chromium's six
// connections per host would starve several full-SDK pages) on endpoint.
async function open(name, endpoint) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.on("requestfailed", (req) => {
    const why = req.failure()?.errorText || "failed";
    if (why !== "net::ERR_ABORTED") failedRequests.push(`${name}: ${req.method()} ${new URL(req.url()).pathname}: ${why}`);
  });
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) consoleErrors.push(`${name}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`${name}: uncaught: ${err.message}`));
  await page.goto(origin + "/", { waitUntil: "load" });
  await page.waitForFunction(() => window.fanout !== undefined, { timeout: 30000 });
  await page.evaluate((c) => window.fanout.start(c), { projectId: cfg.projectId, ...endpoint, longPolling: !!cfg.longPolling });
  return { name, page, from: 0 };
}

let out;
try {
  const model = new Model();
  const writer = await open("writer", cfg.direct);
  for (const w of seed) {
    await writer.page.evaluate((w) => window.fanout.write(w), w);
    apply(model, w);
  }
  const pages = [await open("direct", cfg.direct)];
  for (let i = 0; i < cfg.pages; i++) pages.push(await open(`page-${i}`, cfg.proxied));
  await Promise.all(pages.map((p) => p.page.evaluate(() => window.fanout.listen())));

  const step = async (name) => {
    const want = key(model.state());
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    let timedOut = [];
    for (;;) {
      const status = await Promise.all(pages.map((p) => p.page.evaluate(() => window.fanout.status())));
      const pending = pages.filter((p, i) => status[i].error || status[i].latest !== want);
      if (pending.length === 0) break;
      if (Date.now() > deadline) { timedOut = pending.map((p) => p.name); break; }
      await sleep(50);
    }
    await sleep(QUIET_MS);
    const seen = {};
    for (const p of pages) {
      const events = await p.page.evaluate((from) => window.fanout.events(from), p.from);
      p.from += events.length;
      const states = [];
      for (const e of events) {
        const k = e.error ? `error:${e.error}` : e.fromCache ? null : e.state;
        if (k !== null && states[states.length - 1] !== k) states.push(k);
      }
      seen[p.name] = states;
    }
    return { name, expected: want, seen, timedOut };
  };
  const recorded = [await step("initial")];
  for (const [name, w] of steps) {
    await writer.page.evaluate((w) => window.fanout.write(w), w);
    apply(model, w);
    recorded.push(await step(name));
  }
  out = { steps: recorded, failedRequests, consoleErrors };
} catch (e) {
  out = { error: String(e && e.stack || e) };
}
process.stdout.write(JSON.stringify(out) + "\n", async () => {
  await browser.close().catch(() => {});
  server.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
});
