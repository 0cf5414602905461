// Runs the page's scenarios (page/scenarios.mjs) in headless Chromium, once per run
// named in the configuration, and prints one JSON object on stdout:
//
//   {"runs": {NAME: {"sdk", "phases": {PHASE: {SCENARIO: {result}|{failed}}},
//                    "failedRequests": [...], "errorResponses": [...],
//                    "consoleErrors": [...], "meter": {PHASE: {before, after}}}}}
//
// Usage: node run.mjs CONFIG_JSON, where CONFIG_JSON is
//
//   {"chromium": "/usr/bin/chromium-headless-shell", "pagePort": 0,
//    "runs": [{"name": "lite/proxy", "sdk": "lite" | "full" | "full-longpoll",
//              "host": "127.0.0.1", "port": 8080, "projectId": "p",
//              "meterURL": "http://127.0.0.1:N/counts" (optional)}]}
//
// The page is served from its own loopback origin (http://127.0.0.1:pagePort), so every
// call to Firestore is cross-origin, as in production. The Firebase SDK is bundled from
// node_modules with esbuild when the runner starts: nothing is fetched from the network.
// Runs go in parallel, each in its own tab with its own Firebase app and project.

import { build } from "esbuild";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const here = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(process.argv[2] || "{}");
if (!cfg.chromium || !Array.isArray(cfg.runs)) {
  console.error("usage: node run.mjs '{\"chromium\": PATH, \"runs\": [...]}'");
  process.exit(2);
}

// --- the page ---------------------------------------------------------------------
const bundle = await build({
  entryPoints: { full: join(here, "page/full.mjs"), lite: join(here, "page/lite.mjs") },
  bundle: true, format: "esm", platform: "browser", target: "es2020",
  write: false, outdir: "/page", logLevel: "error",
});
const files = {};
for (const f of bundle.outputFiles) files["/" + f.path.split("/").pop()] = f.text;
const html = (sdk) => `<!doctype html><meta charset="utf-8"><title>harvest ${sdk}</title>
<script type="module" src="/${sdk}.js"></script>`;

const server = http.createServer((req, res) => {
  const u = new URL(req.url, "http://page");
  if (u.pathname === "/") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    return res.end(html(u.searchParams.get("sdk") === "lite" ? "lite" : "full"));
  }
  if (files[u.pathname]) {
    res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" });
    return res.end(files[u.pathname]);
  }
  res.writeHead(404).end();
});
await new Promise((ok) => server.listen(cfg.pagePort || 0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

// --- the browser ------------------------------------------------------------------
const profile = mkdtempSync(join(tmpdir(), "harvest-chromium-"));
const browser = await puppeteer.launch({
  executablePath: cfg.chromium,
  headless: true,
  protocolTimeout: 15 * 60 * 1000, // a phase is bounded by the page's own per-scenario timeouts
  userDataDir: profile,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"],
});

async function meter(url) {
  if (!url) return null;
  const r = await fetch(url);
  return r.json();
}

async function runOne(run) {
  // A browser context per run: its own cookies and, what matters here, its own socket
  // pool. Chromium allows 6 connections per host and profile, and a full SDK holds two
  // of them in hanging backchannels: three full-SDK tabs on one host would starve.
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const out = { sdk: run.sdk, origin, phases: {}, failedRequests: [], errorResponses: [], clientErrors: [], consoleErrors: [], meter: {} };
  const firestoreURL = (u) => !u.startsWith(origin);
  page.on("requestfailed", (req) => {
    const why = req.failure()?.errorText || "failed";
    // The SDK aborts its own requests (a backchannel it replaces, a channel it closes
    // at terminate): net::ERR_ABORTED is the page's choice, not a failure of the server.
    if (why === "net::ERR_ABORTED") return;
    out.failedRequests.push(`${req.method()} ${new URL(req.url()).pathname}: ${why}`);
  });
  page.on("response", (resp) => {
    const line = `${resp.request().method()} ${new URL(resp.url()).pathname}: ${resp.status()}`;
    if (resp.status() >= 500) out.errorResponses.push(line);
    else if (resp.status() >= 400) out.clientErrors.push(line);
  });
  page.on("console", (msg) => {
    // Chromium logs every 4xx/5xx answer as "Failed to load resource"; those are
    // recorded above from the responses themselves (a 404 of a missing document is
    // an ordinary answer). Anything else logged as an error counts.
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource: the server responded with a status of")) {
      out.consoleErrors.push(msg.text());
    }
  });
  page.on("pageerror", (err) => out.consoleErrors.push("uncaught: " + err.message));

  const sdk = run.sdk === "lite" ? "lite" : "full";
  await page.goto(`${origin}/?sdk=${sdk}`, { waitUntil: "load" });
  await page.waitForFunction(() => window.harvest !== undefined, { timeout: 30000 });
  await page.evaluate((c) => window.harvest.start(c), {
    projectId: run.projectId, host: run.host, port: run.port, longPolling: run.sdk === "full-longpoll",
  });
  for (const phase of ["main", "warm", "repeat"]) {
    const before = await meter(run.meterURL);
    out.phases[phase] = await page.evaluate((p) => window.harvest.run(p), phase);
    const after = await meter(run.meterURL);
    if (before) out.meter[phase] = { before, after };
  }
  await page.evaluate(() => window.harvest.stop());
  await context.close();
  return out;
}

let exit = 0;
try {
  const results = await Promise.all(cfg.runs.map((r) => runOne(r).catch((e) => ({ error: String(e && e.stack || e) }))));
  const runs = {};
  cfg.runs.forEach((r, i) => { runs[r.name] = results[i]; });
  process.stdout.write(JSON.stringify({ origin, runs }) + "\n");
} catch (e) {
  console.error(e);
  exit = 1;
} finally {
  await browser.close().catch(() => {});
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(exit);
