// End-to-end check of the chat demo in headless Chromium (playwright-core):
//   node js/e2e/chat.mjs http://127.0.0.1:PORT/ [/usr/bin/chromium]
// Opens two pages (alice, bob), types a message in alice's, waits until it appears in
// bob's, then one from bob to alice. Prints a JSON report; exit status 0 on success.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [url, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node chat.mjs URL [CHROMIUM]");
  process.exit(2);
}
const TIMEOUT = 20000;
const profile = mkdtempSync(path.join(tmpdir(), "nbio-chat-e2e-"));
let context;
const report = { ok: false, steps: [] };

async function open(name) {
  const page = await context.newPage();
  page.on("pageerror", (e) => report.steps.push(`${name} page error: ${e.message}`));
  await page.goto(`${url}?name=${name}`);
  await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: TIMEOUT });
  report.steps.push(`${name}: ${await page.textContent("#status")}`);
  return page;
}

async function say(from, to, text) {
  await from.fill("#text", text);
  await from.press("#text", "Enter");
  await to.waitForFunction(
    (t) => [...document.querySelectorAll("#messages li .text")].some((e) => e.textContent === t),
    text,
    { timeout: TIMEOUT },
  );
  report.steps.push(`seen: ${text}`);
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: TIMEOUT,
  });
  const alice = await open("alice");
  const bob = await open("bob");
  await say(alice, bob, "hello from alice");
  await say(bob, alice, "hi alice, bob here");
  const names = await bob.$$eval("#messages li .name", (els) => els.map((e) => e.textContent));
  report.names = names;
  report.people = await alice.textContent("#people");
  report.ok = names.includes("alice") && names.includes("bob") && /alice/.test(report.people) && /bob/.test(report.people);
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
