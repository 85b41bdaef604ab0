// End-to-end test of search in the web UI, driven by the Go test in
// ../search_test.go:
//
//   node e2e/search.mjs BASE_URL QUERY EXPECTED_TEXT LATER_TEXT SCREENSHOT_PATH USER_DATA_DIR
//
// It drives Debian's chromium (headless, through playwright-core), logs in
// through the development issuer, types QUERY into the search box in the
// header, opens the first hit and waits until the asciinema-player terminal
// shows EXPECTED_TEXT, the screen at the hit's moment, without
// LATER_TEXT, which the recording shows only later: the player opened at
// the moment of the hit, paused there. It fails on any Content Security
// Policy violation or page error.
import { chromium } from "playwright-core";

const [base, query, expected, later, screenshot, userDataDir] = process.argv.slice(2);
if (!base || !query || !expected || !later || !screenshot || !userDataDir) {
  console.error("usage: node e2e/search.mjs BASE_URL QUERY EXPECTED_TEXT LATER_TEXT SCREENSHOT_PATH USER_DATA_DIR");
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

  await page.goto(base + "/ui/");
  await page.waitForSelector("header form.searchbox input[name=q]");
  await page.fill("header form.searchbox input[name=q]", query);
  await page.press("header form.searchbox input[name=q]", "Enter");
  await page.waitForSelector("#hits a.hit");
  console.log("search results at " + page.url());

  await page.click("#hits a.hit");
  await page.waitForSelector("#player .ap-term");
  console.log("replay page " + page.url());
  await page.waitForFunction(
    (want) => {
      const t = document.querySelector("#player .ap-term");
      return t && t.textContent.includes(want);
    },
    expected,
    { timeout },
  );
  const text = await page.textContent("#player .ap-term");
  console.log("player shows " + JSON.stringify(expected));
  if (text.includes(later)) {
    problems.push("the player shows " + JSON.stringify(later) + ", which comes after the hit: it did not open at the hit's moment");
  }
  await page.screenshot({ path: screenshot, fullPage: true });
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
