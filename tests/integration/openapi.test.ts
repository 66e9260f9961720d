import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startTestServer, type TestServer } from '../helpers/server';
import { dbLabel } from '../helpers/env';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The validator is ESM-only (import.meta): run it in its own Node process, as a user would. */
function validateOpenApi(doc: unknown): { valid: boolean; errors?: unknown; version?: string } {
  const script = `
    import { Validator } from '@seriousme/openapi-schema-validator';
    let input = '';
    for await (const chunk of process.stdin) input += chunk;
    const v = new Validator();
    const res = await v.validate(JSON.parse(input));
    console.log(JSON.stringify({ ...res, version: v.version }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { input: JSON.stringify(doc), cwd: process.cwd(), env: { PATH: process.env.PATH } });
  return JSON.parse(out.toString()) as { valid: boolean; errors?: unknown; version?: string };
}

describe(`OpenAPI document and rendered reference (${dbLabel})`, () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => srv?.close());

  test('/openapi.json validates as OpenAPI 3.1', async () => {
    const doc = await (await fetch(`${srv.base}/openapi.json`)).json();
    const res = validateOpenApi(doc);
    expect(res.errors).toBeUndefined();
    expect(res.valid).toBe(true);
    expect(res.version).toBe('3.1');
  });

  test('it lists every route of ours, and nothing else', async () => {
    const doc = (await (await fetch(`${srv.base}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const documented = new Set(Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`)));
    const routed = new Set(srv.running.app.routes.map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
    expect(routed.size).toBeGreaterThan(30);
    expect([...routed].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((d) => !routed.has(d))).toEqual([]);
  });

  test('request schemas are the validating ones', async () => {
    const doc = (await (await fetch(`${srv.base}/openapi.json`)).json()) as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown>; required?: string[] } }> } }>> };
    const verify = doc.paths['/authentication_factors/otp/{channel}/verify']!.post!.requestBody!.content['application/json']!.schema;
    expect(verify.required).toEqual(['verificationCode']);
    const reg = doc.paths['/users']!.post!.requestBody!.content['application/json']!.schema;
    expect(reg.required).toEqual(expect.arrayContaining(['password', 'acceptedTerms']));
  });

  const browserTest = existsSync(CHROMIUM) || process.env.CI ? test : test.skip;
  browserTest('/docs renders in headless Chromium and loads nothing from outside localhost', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      const res = await page.goto(`${srv.base}/docs`);
      expect(res?.status()).toBe(200);
      await expect(page.locator('h1').innerText()).resolves.toContain('Portcullis API reference');
      expect(await page.locator('section.op').count()).toBe(srv.running.app.routes.length);
      await expect(page.getByText('/stepup/challenges/{id}', { exact: true }).first().isVisible()).resolves.toBe(true);
      expect(requests.length).toBeGreaterThan(0);
      expect(requests.filter((u) => !u.startsWith(srv.base))).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
