// A SAML sign-in in a real browser, driven by Go tests (certs/login through
// cmd/postern, and the web UI through server):
//
//   node e2e/saml.mjs START_URL USER PASSWORD WAIT_TEXT SCREENSHOT_PATH USER_DATA_DIR
//
// It drives Debian's chromium (headless, through playwright-core), opens
// START_URL (postern's login URL, which sends the browser to the identity
// provider), fills the provider's login form with USER and PASSWORD, and
// waits until the page the browser ends on (after the provider's answer
// was posted to postern and postern redirected) shows WAIT_TEXT. It fails
// on a page error or a Content Security Policy violation on postern's
// pages, saves a screenshot and exits 0 on success.
import { chromium } from "playwright-core";

const [start, user, password, waitText, screenshot, userDataDir] = process.argv.slice(2);
if (!start || !user || !password || !waitText || !screenshot || !userDataDir) {
  console.error("usage: node e2e/saml.mjs START_URL USER PASSWORD WAIT_TEXT SCREENSHOT_PATH USER_DATA_DIR");
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
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) console.log("at " + frame.url().split("?")[0]);
  });

  await page.goto(start);
  await page.waitForSelector("input[name=user]");
  console.log("identity provider's login form at " + page.url().split("?")[0]);
  await page.fill("input[name=user]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForNavigation(), page.click("input[type=submit]")]);
  await page.waitForFunction((want) => document.body && document.body.innerText.includes(want), waitText, { timeout });
  console.log("signed in: the page shows " + JSON.stringify(waitText) + " at " + page.url().split("?")[0]);
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
    if (page) {
      console.error("page text: " + (await page.innerText("body")).slice(0, 2000));
      await page.screenshot({ path: screenshot, fullPage: true });
    }
  } catch {}
} finally {
  await context.close();
}
process.exit(code);
