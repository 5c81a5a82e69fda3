import { randomFillSync } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { RequestContext } from './context.js';
import type { Clock } from './clock.js';

// SPEC §4: an inbound id is kept only when it matches this; otherwise a new UUID is made.
const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
// W3C Trace Context §3.2: version-traceid-parentid-flags, lower-case hex.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^]*)?$/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_PARENT = '0000000000000000';

/** The request id for a request: the client's when it is well-formed, else a fresh UUID. */
export function requestIdFrom(header: string | string[] | undefined, now?: number): string {
  // A repeated header arrives joined with ", " and fails the pattern: a new id, as for any bad one.
  return typeof header === 'string' && VALID_REQUEST_ID.test(header) ? header : mintRequestId(now);
}

/** The inbound `traceparent` when valid (forwarded unchanged), else a new one (sampled). */
export function traceparentFrom(header: string | string[] | undefined): string {
  if (typeof header === 'string' && header.length >= 55) {
    const m = TRACEPARENT.exec(header);
    if (m && m[1] !== 'ff' && m[2] !== ZERO_TRACE && m[3] !== ZERO_PARENT) {
      // Version 00 has exactly four fields; a higher version may append more (§3.2.4).
      if (m[1] !== '00' || m[5] === undefined) return header;
    }
  }
  return newTraceparent();
}

// Random bytes are drawn 4 KiB at a time: one randomFillSync per 170 trace ids instead of one each.
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;

/** Where `bytes` fresh random bytes start in the pool (refilled when too few are left). */
function draw(bytes: number): number {
  if (poolOffset + bytes > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += bytes;
  return at;
}

const VARIANT = ['8', '9', 'a', 'b'];
const TIME_BASE = 2 ** 48;

/**
 * A new request id: a UUID of version 7 (RFC 9562 §5.7), `tttttttt-tttt-7rrr-vrrr-rrrrrrrrrrrr`:
 * the time in ms (48 bits, `now`: the request's arrival) and 74 random bits. Time-ordered, and
 * it tells the audit trail when the record was made, so that it needs no per-record index
 * (`RedisAuditStore`); it tells nothing the response's `Date` does not.
 */
export function mintRequestId(now: number = Date.now()): string {
  const t = (now + TIME_BASE).toString(16); // '1' and 12 digits (until the year 10889)
  // 18 random hex digits (9 bytes) and two random bits of a tenth byte for the variant digit.
  const r = draw(10);
  const random = pool.toString('hex', r, r + 9);
  return `${t.slice(1, 9)}-${t.slice(9)}-7${random.slice(0, 3)}-${VARIANT[pool[r + 9]! & 3]}${random.slice(3, 6)}-${random.slice(6)}`;
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The time (ms) in a UUIDv7 (lower-case, as minted; a client may send one too), else undefined. */
export function uuidV7Time(id: string): number | undefined {
  if (id.length !== 36 || id.charCodeAt(14) !== 55 /* 7 */ || !UUID_V7.test(id)) return undefined;
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

export function newTraceparent(): string {
  const r = draw(24);
  return `00-${pool.toString('hex', r, r + 16)}-${pool.toString('hex', r + 16, r + 24)}-01`;
}

/** A new context for a request: its id and trace accepted or made (SPEC §4), its arrival time. */
export function newContext(req: IncomingMessage, res: ServerResponse, clock: Clock): RequestContext {
  const headers: IncomingHttpHeaders = req.headers;
  const now = clock.now();
  return new RequestContext(
    req,
    res,
    requestIdFrom(headers['x-request-id'], now),
    traceparentFrom(headers.traceparent),
    now,
    clock.monotonic(),
  );
}
