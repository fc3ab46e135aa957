// The chat page of `zoo serve` in headless Chromium: type two questions, wait for each streamed
// answer, print what the page shows as JSON. Run by tests/zoo/serve.rs:
//
//     NODE_PATH=DIR/node_modules node page_test.mjs BASE_URL CHROMIUM QUESTION1 QUESTION2
//
// DIR holds playwright-core (npm); CHROMIUM is Debian's /usr/bin/chromium.
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const [base, executablePath, ...questions] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "zoo-page-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--headless=new",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
  ],
});
const out = { answers: [], stats: [], partial: false };
try {
  const page = context.pages()[0] || (await context.newPage());
  await page.goto(base + "/");
  await page.waitForSelector("#model option", { state: "attached" });
  out.model = await page.$eval("#model", (s) => s.value);
  await page.fill("#max", "12");
  for (const [i, q] of questions.entries()) {
    await page.fill("#input", q);
    await page.click("#send");
    const id = "#answer-" + (2 * i + 1);
    // The answer grows while it streams: see it non-empty before it is done.
    await page.waitForFunction(
      (sel) => {
        const el = document.querySelector(sel);
        return el && el.textContent.length > 0;
      },
      id,
      { timeout: 120000 }
    );
    const done = await page.$eval(id, (el) => el.dataset.done === "1");
    if (!done) out.partial = true;
    await page.waitForSelector(id + "[data-done='1']", { state: "attached", timeout: 120000 });
    out.answers.push(await page.$eval(id, (el) => ({ text: el.textContent, cls: el.className })));
    out.stats.push(await page.$eval("#stats", (el) => el.textContent));
  }
  out.bubbles = await page.$$eval(".msg", (els) => els.map((e) => e.className));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
