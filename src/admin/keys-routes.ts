import express, { type Router } from 'express';
import { Problem } from '../problems/problem.js';
import { parseOrThrow } from '../problems/validation.js';
import type { Plan } from '../core/identity.js';
import type { KeyManagement } from '../key-management/management.js';
import { setAdminTarget } from './admin-audit.js';
import { createKeyBody, listKeysQuery, patchKeyBody, rotateKeyBody, verifyKeyBody } from './schemas.js';

export interface KeyRoutesDeps {
  management: () => KeyManagement;
  plans: () => Readonly<Record<string, Plan>>;
}

const json = express.json({ limit: '64kb', strict: true, type: () => true });

function notFound(id: string): Problem {
  return new Problem('not-found', { detail: `No key ${id}.` });
}

function checkPlan(plan: string | null | undefined, plans: Readonly<Record<string, Plan>>): void {
  // Own properties only: `__proto__` or `constructor` is no plan (`in` would say it is).
  if (plan !== undefined && plan !== null && !Object.hasOwn(plans, plan))
    throw new Problem('validation-failed', {
      detail: 'The request body is invalid.',
      extensions: { errors: [{ pointer: '/plan', message: 'is not a plan in the config' }] },
    });
}

/**
 * The admin key API (SPEC §6): create (plaintext key and signing secret returned once), list with
 * filters and cursor pagination, get, patch, delete (revoke), rotate with a grace period, verify.
 */
export function mountKeyRoutes(router: Router, deps: KeyRoutesDeps): void {
  router.post('/keys/verify', json, async (req, res) => {
    const body = parseOrThrow(verifyKeyBody, req.body, 'The request body is invalid.');
    res.json(await deps.management().verify(body.key, body));
  });

  router.post('/keys', json, async (req, res) => {
    const body = parseOrThrow(createKeyBody, req.body, 'The request body is invalid.');
    checkPlan(body.plan, deps.plans());
    const created = await deps.management().create(body);
    setAdminTarget(res, created.id);
    res.status(201).json(created);
  });

  router.get('/keys', async (req, res) => {
    const query = parseOrThrow(listKeysQuery, { ...req.query }, 'The query is invalid.', ['query']);
    const m = deps.management();
    if (query.state === 'revoked')
      return void res.json({ items: await m.keys.store.listRevoked(query), nextCursor: null });
    const page = await m.keys.list(query);
    res.json({ items: await Promise.all(page.items.map((r) => m.view(r))), nextCursor: page.nextCursor });
  });

  router.get('/keys/:id', async (req, res) => {
    const m = deps.management();
    const record = await m.keys.get(req.params.id);
    if (record === undefined) throw notFound(req.params.id);
    res.json(await m.view(record));
  });

  router.patch('/keys/:id', json, async (req, res) => {
    const body = parseOrThrow(patchKeyBody, req.body, 'The request body is invalid.');
    checkPlan(body.plan, deps.plans());
    const view = await deps.management().update(req.params.id, body);
    if (view === undefined) throw notFound(req.params.id);
    res.json(view);
  });

  router.delete('/keys/:id', async (req, res) => {
    const revoked = await deps.management().revoke(req.params.id);
    if (revoked === undefined) throw notFound(req.params.id);
    res.status(204).end();
  });

  router.post('/keys/:id/rotate', json, async (req, res) => {
    const body = parseOrThrow(rotateKeyBody, req.body ?? {}, 'The request body is invalid.');
    const rotated = await deps.management().rotate(req.params.id, body.gracePeriodSec);
    if (rotated === undefined) throw notFound(req.params.id);
    res.status(201).json(rotated);
  });
}
