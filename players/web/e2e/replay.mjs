// End-to-end test of the web UI, driven by the Go test in ../web_test.go:
//
//   node e2e/replay.mjs BASE_URL EXPECTED_TEXT SCREENSHOT_PATH USER_DATA_DIR
//
// It drives Debian's chromium (headless, through playwright-core: no browser
// download), logs in through the development issuer, opens the first
// recorded session, seeks with the first marker, and waits until the
// asciinema-player terminal shows EXPECTED_TEXT. It fails on any Content
// Security Policy violation or page error, saves a screenshot and exits 0
// on success.
import { chromium } from "playwright-core";

const [base, expected, screenshot, userDataDir] = process.argv.slice(2);
if (!base || !expected || !screenshot || !userDataDir) {
  console.error("usage: node e2e/replay.mjs BASE_URL EXPECTED_TEXT SCREENSHOT_PATH USER_DATA_DIR");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = 30000;

const problems = [];
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
  viewport: { width: 1280, height: 900 },
});
let code = 1;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on("console", (msg) => {
    const text = msg.text();
    if (/Content.Security.Policy|Refused to/i.test(text)) problems.push("CSP: " + text);
    console.log("console." + msg.type() + ": " + text);
  });
  page.on("pageerror", (err) => problems.push("page error: " + err.message));

  // Log in: /ui/ redirects to the issuer, which approves and comes back.
  await page.goto(base + "/ui/");
  await page.waitForSelector("table.sessions a.open");
  console.log("logged in; sessions listed at " + page.url());

  await page.click("table.sessions a.open");
  await page.waitForSelector("#player .ap-term");
  console.log("replay page " + page.url());

  // Seek with the first marker: it plays from there.
  await page.click("#markers button.seek");
  await page.waitForFunction(
    (want) => {
      const t = document.querySelector("#player .ap-term");
      return t && t.textContent.includes(want);
    },
    expected,
    { timeout },
  );
  console.log("player rendered " + JSON.stringify(expected));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot " + screenshot);
  if (problems.length > 0) {
    console.error(problems.join("\n"));
  } else {
    code = 0;
  }
} catch (err) {
  console.error("e2e failed: " + (err && err.stack ? err.stack : err));
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: screenshot, fullPage: true });
  } catch {}
} finally {
  await context.close();
}
process.exit(code);
