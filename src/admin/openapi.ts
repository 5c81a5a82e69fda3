import { z } from 'zod';
import { auditQuerySchema } from './requests-routes.js';
import {
  auditLookupSchema,
  auditRecordSchema,
  createKeyBody,
  createdKey,
  keyPage,
  keyView,
  listKeysQuery,
  patchKeyBody,
  problemDocument,
  putTenantBody,
  rotateKeyBody,
  rotatedKey,
  selfServiceCreateBody,
  tenantView,
  verifyKeyBody,
  verifyResult,
  webhookAttemptSchema,
} from './schemas.js';
import { deliveriesQuery } from './webhooks-routes.js';
import { usageQuery, usageReport } from './usage-routes.js';

type Json = Record<string, unknown>;

function schemaOf(schema: z.ZodType, io: 'input' | 'output'): Json {
  const out = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  delete out.$schema;
  delete out.id;
  return out;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const jsonContent = (name: string) => ({ 'application/json': { schema: ref(name) } });

function problems(...statuses: number[]): Json {
  const out: Json = {};
  for (const s of statuses)
    out[String(s)] = {
      description: 'A problem (RFC 9457)',
      content: { 'application/problem+json': { schema: ref('Problem') } },
    };
  return out;
}

function queryParameters(schema: z.ZodObject): Json[] {
  const json = schemaOf(schema, 'input');
  const properties = (json.properties ?? {}) as Record<string, Json>;
  return Object.entries(properties).map(([name, s]) => ({ name, in: 'query', required: false, schema: s }));
}

/**
 * The OpenAPI 3.1 document of the admin API and the self-service API, generated from the same zod
 * schemas that validate the requests (never written twice).
 */
export function openApiDocument(options: { version: string; selfServicePath: string | undefined }): Json {
  const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
  const admin = { security: [{ adminToken: [] }] };
  const paths: Json = {
    '/keys': {
      post: {
        ...admin,
        summary: 'Create a key (the plaintext key and signing secret are returned once)',
        requestBody: { required: true, content: jsonContent('CreateKey') },
        responses: {
          '201': { description: 'Created', content: jsonContent('CreatedKey') },
          ...problems(400, 401, 403),
        },
      },
      get: {
        ...admin,
        summary: 'List keys, newest first, masked',
        parameters: queryParameters(listKeysQuery),
        responses: {
          '200': { description: 'A page of keys', content: jsonContent('KeyPage') },
          ...problems(400, 401, 403),
        },
      },
    },
    '/keys/verify': {
      post: {
        ...admin,
        summary: 'Check a key the way the gateway would (with `charge: true`, counted like a request)',
        requestBody: { required: true, content: jsonContent('VerifyKey') },
        responses: {
          '200': { description: 'The verdict', content: jsonContent('VerifyResult') },
          ...problems(400, 401, 403),
        },
      },
    },
    '/keys/{id}': {
      parameters: [idParam],
      get: {
        ...admin,
        summary: 'Get a key',
        responses: {
          '200': { description: 'The key', content: jsonContent('Key') },
          ...problems(401, 403, 404),
        },
      },
      patch: {
        ...admin,
        summary: 'Change a key',
        requestBody: { required: true, content: jsonContent('PatchKey') },
        responses: {
          '200': { description: 'The changed key', content: jsonContent('Key') },
          ...problems(400, 401, 403, 404),
        },
      },
      delete: {
        ...admin,
        summary: 'Revoke a key',
        responses: { '204': { description: 'Revoked' }, ...problems(401, 403, 404) },
      },
    },
    '/keys/{id}/rotate': {
      parameters: [idParam],
      post: {
        ...admin,
        summary: 'Rotate a key: a new key; the old one works until the grace period ends',
        requestBody: { required: false, content: jsonContent('RotateKey') },
        responses: {
          '201': { description: 'The new key', content: jsonContent('RotatedKey') },
          ...problems(400, 401, 403, 404, 409),
        },
      },
    },
    '/tenants/{id}': {
      parameters: [{ ...idParam, description: 'A tenant id, as keys carry it in `tenantId`.' }],
      get: {
        ...admin,
        summary: "A tenant's plan (an id no key names and no plan was set for: 404)",
        responses: {
          '200': { description: 'The tenant', content: jsonContent('Tenant') },
          ...problems(400, 401, 403, 404),
        },
      },
      put: {
        ...admin,
        summary:
          "Set a tenant's plan: every key of the tenant without a plan of its own follows it at once, on every instance",
        requestBody: { required: true, content: jsonContent('PutTenant') },
        responses: {
          '200': { description: 'The tenant', content: jsonContent('Tenant') },
          ...problems(400, 401, 403),
        },
      },
    },
    '/keys/{id}/usage': {
      parameters: [idParam],
      get: {
        ...admin,
        summary: "A key's usage history: requests by status class, meter sums, refusals, per hour or day",
        description:
          'Every bucket of `[from, to)`, oldest first, zeros included. With Redis, exact across instances once each flushed (every `usage.flushIntervalMs`); this instance’s own traffic shows at once. `from`/`to`/`granularity` that do not parse, `from` after `to`, `to` more than a day ahead, or `from` before the retention: 400 validation-failed naming the parameter; an unknown key: 404.',
        parameters: queryParameters(usageQuery),
        responses: {
          '200': { description: 'The usage', content: jsonContent('Usage') },
          ...problems(400, 401, 403, 404),
        },
      },
    },
    '/tenants/{id}/usage': {
      parameters: [{ ...idParam, description: 'A tenant id (a key’s `tenantId`, or a JWT’s tenant).' }],
      get: {
        ...admin,
        summary: "A tenant's usage history (all its keys and tokens), as for a key",
        description:
          'As `GET /keys/{id}/usage`. A tenant no key names, with no plan set and no usage in the range: 404.',
        parameters: queryParameters(usageQuery),
        responses: {
          '200': { description: 'The usage', content: jsonContent('Usage') },
          ...problems(400, 401, 403, 404),
        },
      },
    },
    '/requests/{id}': {
      parameters: [idParam],
      get: {
        ...admin,
        summary: 'The audit record of one request (a problem’s `instance`)',
        description:
          'The newest record with this request id; `others` lists every other record kept with the same id (a client-chosen `X-Request-Id` may be reused), newest first.',
        responses: {
          '200': { description: 'The record', content: jsonContent('AuditLookup') },
          ...problems(401, 403, 404),
        },
      },
    },
    '/requests': {
      get: {
        ...admin,
        summary: 'Recent audit records, newest first',
        description:
          '`kind=request` (default): proxied requests; `kind=admin`: the admin trail (state-changing admin calls and refused admin credentials, with actor, action, target and outcome); `kind=all`: both.',
        parameters: queryParameters(auditQuerySchema),
        responses: {
          '200': {
            description: 'Records',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: { items: { type: 'array', items: ref('AuditRecord') } },
                  required: ['items'],
                },
              },
            },
          },
          ...problems(400, 401, 403),
        },
      },
    },
    '/reload': {
      post: {
        ...admin,
        summary: 'Reload the config file (as SIGHUP does); audited as config.reload',
        responses: {
          '200': {
            description: 'Reloaded',
            content: {
              'application/json': {
                schema: { type: 'object', properties: { reloaded: { const: true } }, required: ['reloaded'] },
              },
            },
          },
          ...problems(401, 403, 404, 409),
        },
      },
    },
    '/webhooks/deliveries': {
      get: {
        ...admin,
        summary: 'Recent webhook delivery attempts, newest first',
        description:
          'Event id (`webhook-id`), type, receiver URL, the receiver’s status (null: no answer), attempts so far, outcome and the next retry. Across instances with Redis.',
        parameters: queryParameters(deliveriesQuery),
        responses: {
          '200': {
            description: 'Attempts',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: { items: { type: 'array', items: ref('WebhookAttempt') } },
                  required: ['items'],
                },
              },
            },
          },
          ...problems(400, 401, 403),
        },
      },
    },
    '/stats': {
      get: {
        ...admin,
        summary:
          'Live-traffic summary for the console: cumulative counters by status class and per route, shadow-mode would-be refusals, latency buckets',
        responses: {
          '200': {
            description: 'The summary',
            content: { 'application/json': { schema: { type: 'object' } } },
          },
          ...problems(401, 403),
        },
      },
    },
    '/healthz': { get: { summary: 'Liveness (no token)', responses: { '200': { description: 'Alive' } } } },
    '/readyz': {
      get: {
        summary: 'Readiness per dependency (no token)',
        responses: { '200': { description: 'Ready' }, '503': { description: 'Not ready' } },
      },
    },
    '/metrics': {
      get: {
        summary: 'Prometheus metrics (no token)',
        responses: { '200': { description: 'Prometheus text format' } },
      },
    },
    '/openapi.json': {
      get: { ...admin, summary: 'This document', responses: { '200': { description: 'OpenAPI 3.1' } } },
    },
  };
  if (options.selfServicePath !== undefined) {
    const selfService = {
      security: [{ userJwt: [] }],
      servers: [{ url: '/', description: 'The public listener' }],
      tags: ['self-service'],
    };
    paths[options.selfServicePath] = {
      post: {
        ...selfService,
        summary: 'Create a key owned by the signed-in user',
        requestBody: { required: true, content: jsonContent('SelfServiceCreateKey') },
        responses: {
          '201': { description: 'Created', content: jsonContent('CreatedKey') },
          ...problems(400, 401, 403, 409),
        },
      },
      get: {
        ...selfService,
        summary: "The signed-in user's keys, masked",
        parameters: queryParameters(listKeysQuery.pick({ limit: true, cursor: true })),
        responses: {
          '200': { description: 'A page of keys', content: jsonContent('KeyPage') },
          ...problems(400, 401, 403),
        },
      },
    };
    paths[`${options.selfServicePath}/{id}`] = {
      parameters: [idParam],
      delete: {
        ...selfService,
        summary: "Revoke one of the signed-in user's keys (another user's or an unknown id: 404)",
        responses: { '204': { description: 'Revoked' }, ...problems(401, 403, 404) },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Tollgate admin and self-service API',
      version: options.version,
      description:
        'Key management, audit and probes (admin listener), and self-service keys (public listener). Errors are RFC 9457 problems.',
    },
    servers: [{ url: '/', description: 'The admin listener' }],
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'An admin token from `admin.tokens`.' },
        userJwt: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description: 'A JWT from a trusted issuer.',
        },
      },
      schemas: {
        CreateKey: schemaOf(createKeyBody, 'input'),
        PatchKey: schemaOf(patchKeyBody, 'input'),
        RotateKey: schemaOf(rotateKeyBody, 'input'),
        VerifyKey: schemaOf(verifyKeyBody, 'input'),
        SelfServiceCreateKey: schemaOf(selfServiceCreateBody, 'input'),
        PutTenant: schemaOf(putTenantBody, 'input'),
        Tenant: schemaOf(tenantView, 'output'),
        Key: schemaOf(keyView, 'output'),
        CreatedKey: schemaOf(createdKey, 'output'),
        RotatedKey: schemaOf(rotatedKey, 'output'),
        KeyPage: schemaOf(keyPage, 'output'),
        VerifyResult: schemaOf(verifyResult, 'output'),
        AuditRecord: schemaOf(auditRecordSchema, 'output'),
        AuditLookup: schemaOf(auditLookupSchema, 'output'),
        WebhookAttempt: schemaOf(webhookAttemptSchema, 'output'),
        Usage: schemaOf(usageReport, 'output'),
        Problem: schemaOf(problemDocument, 'output'),
      },
    },
  };
}
