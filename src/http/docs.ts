import Router from '@koa/router';
import { openApiDocument, OPERATIONS } from './openapi';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** The reference, rendered on the server from the same document: no script, nothing fetched. */
function renderDocs(doc: Record<string, unknown>): string {
  const paths = doc.paths as Record<string, Record<string, { summary: string; tags: string[]; requestBody?: { content: { 'application/json': { schema: unknown } } }; parameters?: Array<{ name: string; in: string; required: boolean }>; responses: Record<string, { description: string }> }>>;
  const tags = [...new Set(OPERATIONS.map((o) => o.tag))];
  const sections = tags.map((tag) => {
    const ops = OPERATIONS.filter((o) => o.tag === tag).map((o) => {
      const op = paths[o.path]![o.method]!;
      const params = (op.parameters ?? []).map((p) => `<li><code>${escape(p.name)}</code> (${p.in}${p.required ? ', required' : ''})</li>`).join('');
      const body = op.requestBody ? `<h4>Request body</h4><pre>${escape(JSON.stringify(op.requestBody.content['application/json'].schema, null, 2))}</pre>` : '';
      const responses = Object.entries(op.responses).map(([code, r]) => `<li><code>${code}</code> ${escape(r.description)}</li>`).join('');
      return `<section class="op" id="${o.method}-${escape(o.path)}"><h3><span class="m ${o.method}">${o.method.toUpperCase()}</span> <code>${escape(o.path)}</code></h3>
<p>${escape(o.summary)}</p>${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ''}${body}<h4>Responses</h4><ul>${responses}</ul></section>`;
    });
    return `<h2 id="${escape(tag)}">${escape(tag)}</h2>${ops.join('\n')}`;
  });
  const info = doc.info as { title: string; version: string; description: string };
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(info.title)} API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1d2733}
code,pre{font-family:ui-monospace,Menlo,monospace}pre{background:#f4f6f8;padding:.75rem;overflow:auto;border-radius:4px;font-size:13px}
.op{border-top:1px solid #dde3e9;padding:.5rem 0}.m{display:inline-block;min-width:4.5em;text-align:center;border-radius:3px;color:#fff;font-size:12px;padding:1px 6px}
.get{background:#2f7d32}.post{background:#1565c0}.patch{background:#8e5b00}.put{background:#6a1b9a}.delete{background:#b71c1c}
nav a{margin-right:1rem}
</style></head><body>
<h1>${escape(info.title)} API reference <small>${escape(info.version)}</small></h1>
<p>${escape(info.description)} Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>
<nav>${tags.map((t) => `<a href="#${escape(t)}">${escape(t)}</a>`).join('')}</nav>
${sections.join('\n')}
</body></html>`;
}

export function docsRoutes(publicUrl: string): Router {
  const doc = openApiDocument(publicUrl);
  const html = renderDocs(doc);
  const router = new Router();
  router.get('/openapi.json', (ctx) => {
    ctx.body = doc;
  });
  router.get('/docs', (ctx) => {
    // Nothing may load from anywhere: the page is one self-contained document.
    ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    ctx.type = 'html';
    ctx.body = html;
  });
  return router;
}
