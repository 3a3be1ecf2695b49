// Bundles src/index.ts into dist/chatroom-widget.js, the one ES module that
// msg-svc embeds and serves as /widget.js. With --check it writes nothing and
// fails if the committed bundle is not what the sources build to.

import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bundle = join(root, "dist", "chatroom-widget.js");
const check = process.argv.includes("--check");

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  banner: {
    js: "/* <chatroom-widget>: built from chatroom's widget/src by `npm run build`; do not edit. */",
  },
  write: false,
  logLevel: "warning",
});
const built = result.outputFiles[0].contents;

if (check) {
  const committed = await readFile(bundle).catch(() => Buffer.alloc(0));
  if (!Buffer.from(built).equals(committed)) {
    console.error(
      `widget/dist/chatroom-widget.js is stale: the sources build to ${built.length} bytes that differ ` +
        `from the ${committed.length} committed. Run \`npm run build\` in widget/ and commit the bundle.`,
    );
    process.exit(1);
  }
  console.log(`widget/dist/chatroom-widget.js matches its sources (${built.length} bytes)`);
} else {
  await mkdir(dirname(bundle), { recursive: true });
  await writeFile(bundle, built);
  console.log(`wrote widget/dist/chatroom-widget.js (${built.length} bytes)`);
}
