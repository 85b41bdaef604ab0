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
import { args, browse, playerShows } from "./browser.mjs";

const [base, query, expected, later, screenshot, userDataDir] =
  args(6, "e2e/search.mjs BASE_URL QUERY EXPECTED_TEXT LATER_TEXT SCREENSHOT_PATH USER_DATA_DIR");

await browse(userDataDir, screenshot, async (page, problems) => {
  await page.goto(base + "/ui/");
  await page.waitForSelector("header form.searchbox input[name=q]");
  await page.fill("header form.searchbox input[name=q]", query);
  await page.press("header form.searchbox input[name=q]", "Enter");
  await page.waitForSelector("#hits a.hit");
  console.log("search results at " + page.url());

  await page.click("#hits a.hit");
  await page.waitForSelector("#player .ap-term");
  console.log("replay page " + page.url());
  await playerShows(page, expected);
  const text = await page.textContent("#player .ap-term");
  console.log("player shows " + JSON.stringify(expected));
  if (text.includes(later)) {
    problems.push("the player shows " + JSON.stringify(later) + ", which comes after the hit: it did not open at the hit's moment");
  }
});
