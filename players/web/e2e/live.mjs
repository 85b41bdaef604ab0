// End-to-end test of the web UI's live view, driven by TestBrowserLive in
// ../web_test.go:
//
//   node e2e/live.mjs BASE_URL FIRST_TEXT NEXT_TEXT SCREENSHOT_PATH USER_DATA_DIR
//
// It logs in through the development issuer, opens the running session,
// waits until the player shows FIRST_TEXT (already recorded), prints
// "READY" so the test records NEXT_TEXT, and waits until that appears too.
import { args, browse, playerShows } from "./browser.mjs";

const [base, first, next, screenshot, userDataDir] = args(5, "e2e/live.mjs BASE_URL FIRST_TEXT NEXT_TEXT SCREENSHOT_PATH USER_DATA_DIR");

await browse(userDataDir, screenshot, async (page) => {
  await page.goto(base + "/ui/?status=running");
  await page.waitForSelector("table.sessions a.open");
  await page.click("table.sessions a.open");
  await page.waitForSelector("#player[data-live]");
  await playerShows(page, first);
  console.log("READY");
  await playerShows(page, next);
  console.log("live output rendered");
}, { quiet: true });
