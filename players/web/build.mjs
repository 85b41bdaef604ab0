// Copies asciinema-player's built files from node_modules into assets/,
// which the Go package embeds. Run by `make web` after `npm ci`.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const from = join(here, "node_modules", "asciinema-player", "dist", "bundle");
const to = join(here, "assets");
if (!existsSync(from)) {
  console.error("asciinema-player is not installed: run npm ci in " + here);
  process.exit(1);
}
mkdirSync(to, { recursive: true });
for (const name of ["asciinema-player.min.js", "asciinema-player.css"]) {
  copyFileSync(join(from, name), join(to, name));
  console.log("copied " + name);
}
