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
import { args, browse, timeout } from "./browser.mjs";

const [start, user, password, waitText, screenshot, userDataDir] =
  args(6, "e2e/saml.mjs START_URL USER PASSWORD WAIT_TEXT SCREENSHOT_PATH USER_DATA_DIR");

await browse(userDataDir, screenshot, async (page) => {
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
});
