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
// If the installed version no longer has that code, nothing is changed and this says so; the
// server works either way (tests/unit/oidc-context-patch.test.ts then fails, as a reminder).
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const MARKER = 'portcullis: one ctx.oidc getter for every request';

const require = createRequire(import.meta.url);
let file;
try {
  file = path.join(path.dirname(require.resolve('oidc-provider/package.json')), 'lib/helpers/initialize_app.js');
} catch {
  process.exit(0); // not installed (yet): nothing to do
}
const { version } = JSON.parse(readFileSync(path.join(path.dirname(file), '../../package.json'), 'utf8'));
const source = readFileSync(file, 'utf8');
if (source.includes(MARKER)) process.exit(0);

// The per-request getter, as oidc-provider 9 writes it (whitespace aside).
const perRequest =
  /const ensureOIDC = async \(ctx, next\) => \{\s*let oidcCtx;\s*Object\.defineProperty\(ctx, 'oidc', \{\s*get: \(\) => \{\s*oidcCtx \|\|= new this\.OIDCContext\(ctx\);\s*return oidcCtx;\s*\},\s*\}\);/;
if (!perRequest.test(source)) {
  console.warn(`patch-oidc-provider: oidc-provider ${version} has no per-request ctx.oidc getter where 9.x had it; left unchanged`);
  process.exit(0);
}
const shared = `// ${MARKER} (scripts/patch-oidc-provider.mjs in Portcullis)
  const provider = this;
  const OIDC_CONTEXT = Symbol('oidc context');
  function oidcContext() {
    if (!Object.hasOwn(this, OIDC_CONTEXT)) this[OIDC_CONTEXT] = new provider.OIDCContext(this);
    return this[OIDC_CONTEXT];
  }
  const ensureOIDC = async (ctx, next) => {
    Object.defineProperty(ctx, 'oidc', { get: oidcContext });`;
const temp = `${file}.portcullis-${process.pid}`;
writeFileSync(temp, source.replace(perRequest, shared));
renameSync(temp, file);
console.log(`patch-oidc-provider: oidc-provider ${version}: ctx.oidc now has one getter for every request`);
