// Run by `npm install` / `npm ci` (postinstall). Changes one function of the installed
// oidc-provider, in place and idempotently: how its routes give each request `ctx.oidc`.
//
// Why: the library defines `ctx.oidc` on every request as an accessor whose getter is a new
// closure over that request's context. On Node 20, V8 keeps such a getter, and everything its
// closure reaches (the request, the response, the OIDC context, the models it loaded), through
// young-generation collections until the next full mark-compact. Measured with `--trace-gc-nvp`
// on bare oidc-provider serving /jwks: 16–19 % of all allocation promoted to the old generation
// (1–2 % with this change), a full collection every 1–2 s per process, and those pauses were the
// p99 of client_credentials at 70 % load (README, Benchmark). The same ctx.oidc, with one getter
// shared by every request, which keeps the request's OIDC context in a symbol-keyed slot of the
// request's own context: created on first read, as before.
//
// If the installed version no longer has that code, or the file cannot be read or written, nothing
// is changed and this says so; the server works either way (tests/unit/oidc-context-patch.test.ts
// then fails, as a reminder). npm runs this for `npm ci` and a bare `npm install`, not for
// `npm install <package>`, `npm update` or `--ignore-scripts`: after those, run `npm ci` again (or
// `node scripts/patch-oidc-provider.mjs`).
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const MARKER = 'portcullis: one ctx.oidc getter for every request';
const warn = (why) => console.warn(`patch-oidc-provider: ${why}; oidc-provider left unchanged`);

// The per-request getter, as oidc-provider 9 writes it (whitespace aside).
const perRequest =
  /const ensureOIDC = async \(ctx, next\) => \{\s*let oidcCtx;\s*Object\.defineProperty\(ctx, 'oidc', \{\s*get: \(\) => \{\s*oidcCtx \|\|= new this\.OIDCContext\(ctx\);\s*return oidcCtx;\s*\},\s*\}\);/;
// Its replacement; names of our own, so that they cannot clash with the library's.
const shared = `// ${MARKER} (scripts/patch-oidc-provider.mjs in Portcullis)
  const portcullisProvider = this;
  const PORTCULLIS_OIDC_CONTEXT = Symbol('oidc context');
  function portcullisOidcContext() {
    if (!Object.hasOwn(this, PORTCULLIS_OIDC_CONTEXT)) this[PORTCULLIS_OIDC_CONTEXT] = new portcullisProvider.OIDCContext(this);
    return this[PORTCULLIS_OIDC_CONTEXT];
  }
  const ensureOIDC = async (ctx, next) => {
    Object.defineProperty(ctx, 'oidc', { get: portcullisOidcContext });`;

function patch() {
  let root;
  try {
    root = path.dirname(createRequire(import.meta.url).resolve('oidc-provider/package.json'));
  } catch {
    return warn('oidc-provider is not installed');
  }
  const file = path.join(root, 'lib/helpers/initialize_app.js');
  const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const source = readFileSync(file, 'utf8');
  if (source.includes(MARKER)) return undefined;
  if (!perRequest.test(source)) return warn(`oidc-provider ${version} has no per-request ctx.oidc getter where 9.x had it`);
  const patched = source.replace(perRequest, shared);
  // Never leave a module that does not parse: the server must start, patched or not.
  const check = spawnSync(process.execPath, ['--check', '--input-type=module'], { input: patched });
  if (check.status !== 0) {
    const why = check.stderr.toString().split('\n').find((line) => /Error/.test(line)) ?? 'a syntax error';
    return warn(`the patched ${file} would not parse (${why.trim()})`);
  }
  const temp = `${file}.portcullis-${process.pid}`;
  try {
    writeFileSync(temp, patched);
    renameSync(temp, file);
  } catch (err) {
    rmSync(temp, { force: true });
    return warn(`cannot write ${file} (${err.code ?? err.message})`);
  }
  console.log(`patch-oidc-provider: oidc-provider ${version}: ctx.oidc now has one getter for every request`);
  return undefined;
}

try {
  patch();
} catch (err) {
  warn(err.message);
}
