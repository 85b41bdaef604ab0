// What the end-to-end scripts share: Debian's chromium, headless, through
// playwright-core (no browser download), a page that records Content
// Security Policy violations and page errors, a screenshot at the end or on
// failure, and the exit status the Go tests read.
import { chromium } from "playwright-core";

// timeout bounds every wait, in milliseconds.
export const timeout = 30000;

// args returns the script's n command-line arguments, or exits 2 with usage
// when any is missing.
export function args(n, usage) {
  const a = process.argv.slice(2);
  if (a.length < n || a.slice(0, n).some((v) => !v)) {
    console.error("usage: node " + usage);
    process.exit(2);
  }
  return a.slice(0, n);
}

// browse opens a browser with the profile userDataDir, runs body(page,
// problems), saves a screenshot and exits: 0 if body returned and nothing
// was pushed to problems (CSP violations and page errors are pushed as they
// happen), 1 otherwise. With quiet, the page's console is not echoed.
export async function browse(userDataDir, screenshot, body, { quiet = false } = {}) {
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
  let code = 1;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(timeout);
    page.on("console", (msg) => {
      const text = msg.text();
      if (/Content.Security.Policy|Refused to/i.test(text)) problems.push("CSP: " + text);
      if (!quiet) console.log("console." + msg.type() + ": " + text);
    });
    page.on("pageerror", (err) => problems.push("page error: " + err.message));
    await body(page, problems);
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
      if (page) {
        console.error("page text: " + (await page.innerText("body")).slice(0, 2000));
        await page.screenshot({ path: screenshot, fullPage: true });
      }
    } catch {}
  } finally {
    await context.close();
  }
  process.exit(code);
}

// playerShows waits until the asciinema-player terminal shows text.
export function playerShows(page, text) {
  return page.waitForFunction(
    (want) => {
      const t = document.querySelector("#player .ap-term");
      return t && t.textContent.includes(want);
    },
    text,
    { timeout },
  );
}
