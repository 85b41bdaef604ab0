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
import { args, browse, playerShows } from "./browser.mjs";

const [base, expected, screenshot, userDataDir] = args(4, "e2e/replay.mjs BASE_URL EXPECTED_TEXT SCREENSHOT_PATH USER_DATA_DIR");

await browse(userDataDir, screenshot, async (page) => {
  // Log in: /ui/ redirects to the issuer, which approves and comes back.
  await page.goto(base + "/ui/");
  await page.waitForSelector("table.sessions a.open");
  console.log("logged in; sessions listed at " + page.url());

  await page.click("table.sessions a.open");
  await page.waitForSelector("#player .ap-term");
  console.log("replay page " + page.url());

  // Seek with the first marker: it plays from there.
  await page.click("#markers button.seek");
  await playerShows(page, expected);
  console.log("player rendered " + JSON.stringify(expected));
});
