// Bundles the console page into console/dist, which the berth binary
// embeds (go:embed all:dist). Run by scripts/build-console.sh.
import * as esbuild from 'esbuild';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const out = fileURLToPath(new URL('../console/dist/', import.meta.url));

await mkdir(out, { recursive: true });
// A stale asset would be embedded too; .keep stays for git.
for (const name of await readdir(out)) {
	if (name !== '.keep') await rm(out + name, { recursive: true, force: true });
}
await esbuild.build({
	absWorkingDir: here,
	entryPoints: { app: 'src/app.js' },
	bundle: true,
	minify: true,
	format: 'esm',
	target: ['es2022'],
	outdir: out,
	// Licences of the bundled packages go into app.js.LEGAL.txt.
	legalComments: 'external',
	logLevel: 'warning',
});
await copyFile(here + 'src/index.html', out + 'index.html');
