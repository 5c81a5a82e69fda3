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
export function requestIdFrom(header: string | string[] | undefined): string {
  // A repeated header arrives joined with ", " and fails the pattern: a new id, as for any bad one.
  return typeof header === 'string' && VALID_REQUEST_ID.test(header) ? header : mintRequestId();
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
/** Sequence numbers per instance tag: 28 bits (7 hex digits). */
const SEQ_LIMIT = 2 ** 28;
/** The tag's part of every id: `IIIIIIII-IIII-8`. */
let prefix = '';
let seq = SEQ_LIMIT;

/**
 * A new request id: a UUID of version 8 (RFC 9562 §5.8, custom), `IIIIIIII-IIII-8SSS-vSSS-
 * SRRRRRRRRRRR` — a random 48-bit tag of this process (I, drawn anew every 2²⁸ ids), a sequence
 * number (S, 28 bits) and 46 random bits (R and the two free bits of the variant digit v). The
 * tag and the sequence tell the audit trail where the id's record is (`RedisAuditStore`: no
 * per-record index for a minted id); the random bits keep ids unguessable (one in 2⁴⁶ given the
 * tag and the sequence). Not secret: nothing trusts an id's shape (a client may send one).
 */
export function mintRequestId(): string {
  if (seq >= SEQ_LIMIT) {
    const t = draw(6);
    const tag = pool.toString('hex', t, t + 6);
    prefix = `${tag.slice(0, 8)}-${tag.slice(8)}-8`;
    seq = 0;
  }
  const s = (seq++ + SEQ_LIMIT).toString(16); // '1' and the 7 digits
  const r = draw(6);
  const random = pool.toString('hex', r, r + 6);
  return `${prefix}${s.slice(1, 4)}-${VARIANT[pool[r]! & 3]}${s.slice(4, 7)}-${s[7]}${random.slice(1)}`;
}

const MINTED = /^([0-9a-f]{8})-([0-9a-f]{4})-8([0-9a-f]{3})-[89ab]([0-9a-f]{3})-([0-9a-f])[0-9a-f]{11}$/;

/** The tag and sequence number of an id of the minted shape (any instance's, or a client's copy). */
export function mintedParts(id: string): { instance: string; seq: number } | undefined {
  if (id.length !== 36 || id.charCodeAt(14) !== 56 /* 8 */) return undefined;
  const m = MINTED.exec(id);
  return m === null ? undefined : { instance: m[1]! + m[2]!, seq: parseInt(m[3]! + m[4]! + m[5]!, 16) };
}

export function newTraceparent(): string {
  if (poolOffset + 24 > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const traceId = pool.toString('hex', poolOffset, poolOffset + 16);
  const parentId = pool.toString('hex', poolOffset + 16, poolOffset + 24);
  poolOffset += 24;
  return `00-${traceId}-${parentId}-01`;
}

/** A new context for a request: its id and trace accepted or made (SPEC §4), its arrival time. */
export function newContext(req: IncomingMessage, res: ServerResponse, clock: Clock): RequestContext {
  const headers: IncomingHttpHeaders = req.headers;
  return new RequestContext(
    req,
    res,
    requestIdFrom(headers['x-request-id']),
    traceparentFrom(headers.traceparent),
    clock.now(),
    clock.monotonic(),
  );
}
