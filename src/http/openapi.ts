import { z } from 'zod';
import { registrationSchema } from '../users/service';
import { pushEnrolmentSchema } from '../factors/service';
import { deviceAnswerBody, verificationSchema } from '../factors/routes';
import { startBody, verifyBody } from '../stepup/routes';
import * as A from '../admin/schemas';

type Method = 'get' | 'post' | 'patch' | 'put' | 'delete';
type Auth = 'none' | 'user' | 'client' | 'admin' | 'userOrPending';

interface Operation {
  method: Method;
  path: string; // OpenAPI style: /users/{id}
  tag: string;
  summary: string;
  auth: Auth;
  body?: z.ZodType;
  query?: z.ZodObject;
  ok: { status: number; description: string; schema?: z.ZodType };
  idempotent?: boolean;
  ifMatch?: boolean;
}

const registration = registrationSchema.extend({ tenant: z.string().optional() });

/**
 * Every route of ours, with the same zod schemas that validate its requests: the one source of
 * the OpenAPI document. A test checks that this list and the routers agree.
 */
export const OPERATIONS: Operation[] = [
  { method: 'get', path: '/healthz', tag: 'Operations', summary: 'Liveness', auth: 'none', ok: { status: 200, description: 'The process runs' } },
  { method: 'get', path: '/readyz', tag: 'Operations', summary: 'Readiness: not draining, database reachable', auth: 'none', ok: { status: 200, description: 'Ready (503 when not)' } },
  { method: 'get', path: '/metrics', tag: 'Operations', summary: 'Prometheus metrics (restrict to your network)', auth: 'none', ok: { status: 200, description: 'Prometheus text format' } },
  { method: 'get', path: '/openapi.json', tag: 'Operations', summary: 'This document', auth: 'none', ok: { status: 200, description: 'OpenAPI 3.1' } },
  { method: 'get', path: '/docs', tag: 'Operations', summary: 'This document, rendered', auth: 'none', ok: { status: 200, description: 'HTML' } },

  { method: 'post', path: '/users', tag: 'Users', summary: 'Register a user (account-authenticated: api-key, client token, or both of one client; a tenant may require the api-key)', auth: 'client', body: registration, idempotent: true, ok: { status: 201, description: 'The user and a token pair' } },
  { method: 'get', path: '/users/me', tag: 'Users', summary: 'The signed-in user', auth: 'user', ok: { status: 200, description: 'The user' } },
  { method: 'get', path: '/sessions', tag: 'Users', summary: "The user's sessions", auth: 'user', ok: { status: 200, description: 'Sessions' } },
  { method: 'delete', path: '/sessions/{id}', tag: 'Users', summary: 'End one of the user’s sessions (its tokens stop at once)', auth: 'user', ok: { status: 204, description: 'Ended' } },

  { method: 'get', path: '/authentication_factors', tag: 'Factors', summary: "The user's factors", auth: 'user', ok: { status: 200, description: '{factors: [{type, channel, status}]}' } },
  { method: 'post', path: '/authentication_factors/otp/{channel}', tag: 'Factors', summary: 'Enrol SMS: a code is sent to the user’s mobile', auth: 'user', idempotent: true, ok: { status: 204, description: 'Sent' } },
  { method: 'post', path: '/authentication_factors/otp/{channel}/verify', tag: 'Factors', summary: 'Verify the SMS enrolment code', auth: 'user', body: verificationSchema, idempotent: true, ok: { status: 204, description: 'ACTIVE' } },
  { method: 'post', path: '/authentication_factors/push/{channel}', tag: 'Factors', summary: 'Enrol a push device by its P-256 public key', auth: 'user', body: pushEnrolmentSchema, idempotent: true, ok: { status: 204, description: 'PENDING until the device answers' } },
  { method: 'delete', path: '/authentication_factors/push/{channel}', tag: 'Factors', summary: 'Unlink a push device (needs SCA when a factor is ACTIVE)', auth: 'user', ok: { status: 204, description: 'Unlinked' } },
  { method: 'post', path: '/device/challenges/{id}', tag: 'Factors', summary: 'The device answers a challenge with an ES256 JWS', auth: 'none', body: deviceAnswerBody, idempotent: true, ok: { status: 200, description: '{status}' } },

  { method: 'post', path: '/stepup/challenges/otp/{channel}', tag: 'Step-up', summary: 'SCA by SMS: send a code (optionally bound to a payment)', auth: 'userOrPending', body: startBody, idempotent: true, ok: { status: 204, description: 'Sent' } },
  { method: 'post', path: '/stepup/challenges/otp/{channel}/verify', tag: 'Step-up', summary: 'Verify the code: a token with acr urn:openbanking:psd2:sca', auth: 'userOrPending', body: verifyBody, idempotent: true, ok: { status: 200, description: 'Token response' } },
  { method: 'post', path: '/stepup/challenges/push/{channel}', tag: 'Step-up', summary: 'SCA by push to the enrolled device', auth: 'userOrPending', body: startBody, idempotent: true, ok: { status: 202, description: '{challengeId, status, expiresAt}' } },
  { method: 'get', path: '/stepup/challenges/{id}', tag: 'Step-up', summary: 'Challenge status; the token once when APPROVED', auth: 'userOrPending', ok: { status: 200, description: '{challengeId, status, expiresAt, token?}' } },

  { method: 'get', path: '/admin/tenants', tag: 'Admin', summary: 'List tenants', auth: 'admin', query: A.paging, ok: { status: 200, description: '{items, next}' } },
  { method: 'post', path: '/admin/tenants', tag: 'Admin', summary: 'Create a tenant (platform admin)', auth: 'admin', body: A.tenantCreate, idempotent: true, ok: { status: 201, description: 'The tenant' } },
  { method: 'get', path: '/admin/tenants/{t}', tag: 'Admin', summary: 'Read a tenant (ETag)', auth: 'admin', ok: { status: 200, description: 'The tenant' } },
  { method: 'patch', path: '/admin/tenants/{t}', tag: 'Admin', summary: 'Update or disable a tenant (disabling revokes every token of the tenant issued until then, for good)', auth: 'admin', body: A.tenantPatch, ifMatch: true, ok: { status: 200, description: 'The tenant' } },
  { method: 'get', path: '/admin/tenants/{t}/policy', tag: 'Admin', summary: 'Effective policy and overrides (ETag)', auth: 'admin', ok: { status: 200, description: '{policy, overrides}' } },
  { method: 'patch', path: '/admin/tenants/{t}/policy', tag: 'Admin', summary: 'Change policy (null restores a default); live on every process', auth: 'admin', body: A.policyPatch, ifMatch: true, ok: { status: 200, description: '{policy, overrides}' } },
  { method: 'get', path: '/admin/tenants/{t}/clients', tag: 'Admin', summary: "List the tenant's clients", auth: 'admin', query: A.paging, ok: { status: 200, description: '{items, next}' } },
  { method: 'post', path: '/admin/tenants/{t}/clients', tag: 'Admin', summary: 'Create a client (secret and API key shown once)', auth: 'admin', body: A.clientCreate, idempotent: true, ok: { status: 201, description: 'Client metadata with client_secret and api_key' } },
  { method: 'get', path: '/admin/tenants/{t}/clients/{id}', tag: 'Admin', summary: 'Read a client (ETag)', auth: 'admin', ok: { status: 200, description: 'Client metadata' } },
  { method: 'patch', path: '/admin/tenants/{t}/clients/{id}', tag: 'Admin', summary: 'Update or disable a client (disabling revokes every token issued to it until then, for good; 403 for a tenant-bound admin when the client also serves other tenants)', auth: 'admin', body: A.clientPatch, ifMatch: true, ok: { status: 200, description: 'Client metadata' } },
  { method: 'post', path: '/admin/tenants/{t}/clients/{id}/secret', tag: 'Admin', summary: 'Rotate the secret; the old one works for the overlap (403 for a tenant-bound admin when the client also serves other tenants)', auth: 'admin', body: A.secretRotation, idempotent: true, ok: { status: 200, description: '{client_id, client_secret, previous_secret_expires_at}' } },
  { method: 'post', path: '/admin/tenants/{t}/clients/{id}/api-key', tag: 'Admin', summary: 'Rotate the API key; the old one works for the overlap, none by default (403 for a tenant-bound admin when the client also serves other tenants)', auth: 'admin', body: A.apiKeyRotation, idempotent: true, ok: { status: 200, description: '{client_id, api_key, previous_api_key_expires_at}' } },
  { method: 'get', path: '/admin/tenants/{t}/users', tag: 'Admin', summary: 'List or search users', auth: 'admin', query: A.userSearch, ok: { status: 200, description: '{items, next}' } },
  { method: 'post', path: '/admin/tenants/{t}/users', tag: 'Admin', summary: 'Register a user (admin)', auth: 'admin', body: A.adminUserCreate, idempotent: true, ok: { status: 201, description: 'The user' } },
  { method: 'get', path: '/admin/tenants/{t}/users/{id}', tag: 'Admin', summary: 'Read a user', auth: 'admin', ok: { status: 200, description: 'The user' } },
  { method: 'patch', path: '/admin/tenants/{t}/users/{id}', tag: 'Admin', summary: "Edit a user's identifiers, role, group, profile, MFA requirement or password (a changed mobile removes the SMS factor; a new password ends every session)", auth: 'admin', body: A.userPatch, ok: { status: 200, description: 'The user' } },
  { method: 'delete', path: '/admin/tenants/{t}/users/{id}', tag: 'Admin', summary: 'Delete a user: their factors, sessions and tokens (inactive at once) and stored replies go with them; the audit log keeps its records', auth: 'admin', ok: { status: 204, description: 'Deleted' } },
  { method: 'post', path: '/admin/tenants/{t}/users/{id}/lock', tag: 'Admin', summary: 'Lock a user (ends their sessions)', auth: 'admin', idempotent: true, ok: { status: 200, description: 'The user' } },
  { method: 'delete', path: '/admin/tenants/{t}/users/{id}/lock', tag: 'Admin', summary: 'Unlock a user', auth: 'admin', ok: { status: 200, description: 'The user' } },
  { method: 'delete', path: '/admin/tenants/{t}/users/{id}/factors', tag: 'Admin', summary: "Reset a user's factors", auth: 'admin', ok: { status: 204, description: 'Reset' } },
  { method: 'get', path: '/admin/tenants/{t}/users/{id}/sessions', tag: 'Admin', summary: "A user's sessions", auth: 'admin', ok: { status: 200, description: '{sessions}' } },
  { method: 'delete', path: '/admin/tenants/{t}/users/{id}/sessions', tag: 'Admin', summary: "End all of a user's sessions", auth: 'admin', ok: { status: 204, description: 'Ended' } },
  { method: 'delete', path: '/admin/tenants/{t}/users/{id}/sessions/{sid}', tag: 'Admin', summary: 'End one session', auth: 'admin', ok: { status: 204, description: 'Ended' } },
  { method: 'post', path: '/admin/tenants/{t}/users/{id}/login', tag: 'Admin', summary: 'Admin login: a user token for back-end use, marked with act (RFC 8693); no refresh token, refused by the factor and step-up routes', auth: 'admin', body: A.adminLogin, idempotent: true, ok: { status: 200, description: 'Token response' } },
  { method: 'get', path: '/admin/keys', tag: 'Admin', summary: 'Signing keys (platform admin)', auth: 'admin', ok: { status: 200, description: '{keys}' } },
  { method: 'post', path: '/admin/keys/rotate', tag: 'Admin', summary: 'Rotate the signing key: published now, signs after the delay', auth: 'admin', idempotent: true, ok: { status: 201, description: '{kid, activatesAt}' } },
  { method: 'get', path: '/admin/audit', tag: 'Admin', summary: 'Audit log, newest first', auth: 'admin', query: A.auditQuery, ok: { status: 200, description: '{items, next}' } },
];

const jsonSchema = (s: z.ZodType) => z.toJSONSchema(s, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;

const SECURITY: Record<Auth, Array<Record<string, string[]>>> = {
  none: [],
  user: [{ bearer: [] }, { bearer: [], apiKey: [] }],
  userOrPending: [{ bearer: [] }, { bearer: [], apiKey: [] }],
  client: [{ apiKey: [] }, { bearer: [] }],
  admin: [{ bearer: ['admin'] }],
};

export function openApiDocument(publicUrl: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of OPERATIONS) {
    const params = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (op.query) {
      for (const [name, schema] of Object.entries(op.query.shape)) params.push({ name, in: 'query', required: false, schema: jsonSchema(schema as z.ZodType) as never });
    }
    const headers = [
      ...(op.idempotent ? [{ name: 'idempotency-ref', in: 'header', required: false, schema: { type: 'string', maxLength: 255 }, description: 'Same request again within 24 h: the stored reply' }] : []),
      ...(op.ifMatch ? [{ name: 'If-Match', in: 'header', required: true, schema: { type: 'string' }, description: 'The ETag read' }] : []),
    ];
    const responses: Record<string, unknown> = {
      [String(op.ok.status)]: { description: op.ok.description },
      ...(op.body || op.query ? { 400: { description: 'Validation error', content: { 'application/json': { schema: { $ref: '#/components/schemas/ValidationError' } } } } } : {}),
      ...(op.auth !== 'none' ? { 401: { description: 'Missing or invalid credentials', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } } } : {}),
      ...(op.auth !== 'none' ? { 403: { description: 'Forbidden', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } } } : {}),
      ...(op.ifMatch ? { 412: { description: 'The resource changed since it was read' }, 428: { description: 'If-Match is required' } } : {}),
      ...(op.idempotent ? { 409: { description: 'idempotency-ref reused with another request, or still in flight' } } : {}),
      default: { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
    };
    paths[op.path] ??= {};
    paths[op.path]![op.method] = {
      tags: [op.tag],
      summary: op.summary,
      operationId: `${op.method}${op.path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      security: SECURITY[op.auth],
      ...(params.length + headers.length ? { parameters: [...params, ...headers] } : {}),
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(op.body) } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Portcullis',
      version: '0.1.0',
      description: 'Our own routes. The OAuth endpoints (/token, /token/introspection, /token/revocation, /jwks) are described by /.well-known/openid-configuration.',
    },
    servers: [{ url: publicUrl }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An access token from /token' },
        apiKey: { type: 'apiKey', in: 'header', name: 'api-key', description: "The client's API key (account authentication)" },
      },
      schemas: {
        Error: { type: 'object', required: ['message', 'code'], properties: { message: { type: 'string' }, code: { type: 'string' } } },
        ValidationError: {
          type: 'object',
          required: ['message', 'syntaxErrors'],
          properties: {
            message: { type: 'string' },
            syntaxErrors: {
              type: 'object',
              properties: {
                invalidFields: { type: 'array', items: { type: 'object', properties: { fieldName: { type: 'string' }, error: { type: 'string' } } } },
              },
            },
          },
        },
      },
    },
  };
}
