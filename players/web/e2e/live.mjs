// End-to-end test of the web UI's live view, driven by TestBrowserLive in
// ../web_test.go:
//
//   node e2e/live.mjs BASE_URL FIRST_TEXT NEXT_TEXT SCREENSHOT_PATH USER_DATA_DIR
//
// It logs in through the development issuer, opens the running session,
// waits until the player shows FIRST_TEXT (already recorded), prints
// "READY" so the test records NEXT_TEXT, and waits until that appears too.
import { chromium } from "playwright-core";

const [base, first, next, screenshot, userDataDir] = process.argv.slice(2);
if (!base || !first || !next || !screenshot || !userDataDir) {
  console.error("usage: node e2e/live.mjs BASE_URL FIRST_TEXT NEXT_TEXT SCREENSHOT_PATH USER_DATA_DIR");
  process.exit(2);
}
const timeout = 30000;
const problems = [];
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
  viewport: { width: 1280, height: 900 },
});
const shows = (page, text) =>
  page.waitForFunction(
    (want) => {
      const t = document.querySelector("#player .ap-term");
      return t && t.textContent.includes(want);
    },
    text,
    { timeout },
  );
let code = 1;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on("console", (msg) => {
    if (/Content.Security.Policy|Refused to/i.test(msg.text())) problems.push("CSP: " + msg.text());
  });
  page.on("pageerror", (err) => problems.push("page error: " + err.message));
  await page.goto(base + "/ui/?status=running");
  await page.waitForSelector("table.sessions a.open");
  await page.click("table.sessions a.open");
  await page.waitForSelector("#player[data-live]");
  await shows(page, first);
  console.log("READY");
  await shows(page, next);
  console.log("live output rendered");
  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length > 0) console.error(problems.join("\n"));
  else code = 0;
} catch (err) {
  console.error("e2e failed: " + (err && err.stack ? err.stack : err));
} finally {
  await context.close();
}
process.exit(code);
