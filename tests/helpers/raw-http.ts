import { request } from 'node:http';

/** Headers that differ between any two responses whatever served them. */
const VARYING = new Set(['date', 'x-request-id', 'content-length', 'keep-alive', 'connection']);

export interface RawAnswer {
  status: number;
  /** Parsed JSON, or the text when it is not JSON. */
  body: unknown;
  /** The headers as sent — names in their case, in their order — but for those that always vary. */
  headers: Array<[string, string]>;
}

/** One header of an answer (by name, in any case). */
export function header(answer: RawAnswer, name: string): string | undefined {
  return answer.headers.find(([k]) => k.toLowerCase() === name)?.[1];
}

/**
 * A POST with node:http, not fetch: headers go exactly as given (an empty one too), with the
 * body's length; `hold`, when given, runs after the headers and the first half of the body are
 * sent, and the rest follows when it resolves.
 */
export function post(url: string, body: string, headers: Record<string, string>, hold?: () => Promise<void>): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const out: Array<[string, string]> = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          if (!VARYING.has(res.rawHeaders[i]!.toLowerCase())) out.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
        }
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* not JSON: compared as text */
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: out });
      });
    });
    req.on('error', reject);
    if (!hold) {
      req.end(body);
      return;
    }
    const bytes = Buffer.from(body);
    const half = Math.floor(bytes.length / 2);
    req.write(bytes.subarray(0, half));
    req.flushHeaders();
    hold().then(
      () => req.end(bytes.subarray(half)),
      (err: unknown) => {
        req.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
