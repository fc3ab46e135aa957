// Runs one job of the zoo's WebGPU page (examples/web) in headless Chromium and prints the
// page's #result JSON once it sets data-done="1". Run by tests/web.sh:
//
//     NODE_PATH=DIR/node_modules node page.mjs URL CHROMIUM [TIMEOUT_S]
//
// URL is the page with its job (`http://127.0.0.1:P/?model=…&task=chat&…`); DIR holds
// playwright-core (npm); CHROMIUM is Debian's /usr/bin/chromium, whose SwiftShader gives
// WebGPU with --enable-unsafe-webgpu. The page's console goes to stderr.
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const [url, executablePath, timeout = "900"] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "zoo-web-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu-sandbox",
    "--enable-unsafe-webgpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
  ],
});
let code = 0;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`[page error] ${e}\n`));
  await page.goto(url);
  await page.waitForSelector('#result[data-done="1"]', {
    state: "attached",
    timeout: Number(timeout) * 1000,
  });
  const result = await page.$eval("#result", (e) => e.textContent);
  const stats = await page.$eval("#stats", (e) => e.textContent);
  const output = await page.$eval("#output", (e) => e.textContent);
  process.stderr.write(`[page stats] ${stats}\n[page output] ${output}\n`);
  process.stdout.write(result + "\n");
} catch (e) {
  process.stderr.write(`page test failed: ${e}\n`);
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
