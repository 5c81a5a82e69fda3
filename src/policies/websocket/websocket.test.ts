import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Duplex } from 'node:stream';
import { fakeContext } from '../../core/fake-context.js';
import { Problem } from '../../problems/problem.js';
import { FrameWatcher, closeFrame } from '../proxy/websocket-tunnel.js';
import { createWebSocketStage, credentialFromQuery } from './websocket.js';
import { websocketSchema } from './schema.js';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const handshake = {
  connection: 'Upgrade',
  upgrade: 'websocket',
  'sec-websocket-key': KEY,
  'sec-websocket-version': '13',
};

function run(url: string, headers: Record<string, string> = {}, upgrade = false) {
  const t = fakeContext({ url, headers });
  if (upgrade)
    t.ctx.upgrade = { socket: new Duplex(), head: Buffer.alloc(0), established: false, closeCode: undefined };
  const stage = createWebSocketStage();
  try {
    void stage.run(t.ctx);
    return { t, problem: undefined };
  } catch (err) {
    expect(err).toBeInstanceOf(Problem);
    return { t, problem: err as Problem };
  }
}

describe('websocket stage (in-process)', () => {
  it('takes access_token out of the query and presents it as a Bearer credential, never forwarded', () => {
    const { t, problem } = run('/chat?a=1&access_token=tg_abc.def&b=%20');
    expect(problem).toBeUndefined();
    expect(t.ctx.search).toBe('?a=1&b=%20');
    expect(t.req.url).toBe('/chat?a=1&b=%20');
    expect(t.req.headers.authorization).toBe('Bearer tg_abc.def');
    expect(credentialFromQuery(t.req)).toBe(true);
  });

  it('finds the parameter in any percent-encoding, and refuses it twice', () => {
    const { t } = run('/chat?access%5Ftoken=x');
    expect(t.ctx.search).toBe('');
    expect(t.req.headers.authorization).toBe('Bearer x');
    expect(run('/chat?access_token=a&access_token=b').problem?.status).toBe(400);
  });

  it('leaves a request with its own Authorization to it (the query copy is still removed)', () => {
    const { t } = run('/chat?access_token=q', { authorization: 'Bearer header' });
    expect(t.req.headers.authorization).toBe('Bearer header');
    expect(t.req.url).toBe('/chat');
    expect(credentialFromQuery(t.req)).toBe(false);
  });

  it('never leaves the token in the URL, whatever the query (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[a-z_%0-9]{0,8}=[a-z0-9]{0,6}$/), { maxLength: 4 }),
        fc.stringMatching(/^[A-Za-z0-9]{12,20}$/),
        (params, token) => {
          const query = [...params, `access_token=SECRET${token}`].sort().join('&');
          const { t } = run(`/chat?${query}`);
          return !t.req.url!.includes(`SECRET${token}`) && !t.ctx.search.includes(`SECRET${token}`);
        },
      ),
    );
  });

  it('accepts a well-formed handshake and refuses malformed ones with 400', () => {
    expect(run('/chat', handshake, true).problem).toBeUndefined();
    const bad = (h: Record<string, string>) => run('/chat', { ...handshake, ...h }, true).problem;
    expect(bad({ 'sec-websocket-key': 'c2hvcnQ=' })?.status).toBe(400);
    expect(bad({ 'sec-websocket-key': KEY.replace('Q', '*') })?.status).toBe(400);
    expect(bad({ upgrade: 'h2c' })?.status).toBe(400);
    const version = bad({ 'sec-websocket-version': '8' });
    expect(version?.status).toBe(400);
    expect(version?.headers?.['sec-websocket-version']).toBe('13');
  });

  it('parses websocket: true and {idleTimeoutSec}', () => {
    expect(websocketSchema.parse(true)).toEqual({ idleTimeoutSec: 300 });
    expect(websocketSchema.parse(false)).toBeUndefined();
    expect(websocketSchema.parse({ idleTimeoutSec: 5 })).toEqual({ idleTimeoutSec: 5 });
    expect(websocketSchema.safeParse({ maxMessageBytes: 5 }).success).toBe(false);
  });
});

/** A frame as a server (unmasked) or client (masked) sends it. */
function frame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  const len = payload.length;
  const head: number[] = [0x80 | opcode];
  const m = masked ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else {
    head.push(m | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const mask = [1, 2, 3, 4];
  return Buffer.concat([
    Buffer.from([...head, ...mask]),
    Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!)),
  ]);
}

describe('FrameWatcher', () => {
  it('follows frame boundaries and reads close codes across any chunking (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 70_000 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.integer({ min: 1000, max: 4999 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 20 }),
        (sizes, masked, code, cuts) => {
          const frames = sizes.map((n) => frame(0x2, Buffer.alloc(n, 1), masked));
          const close = frame(0x8, Buffer.from([code >> 8, code & 0xff, 0x61]), masked);
          const stream = Buffer.concat([...frames, close]);
          const w = new FrameWatcher();
          let seen: number | undefined;
          let at = 0;
          let i = 0;
          while (at < stream.length) {
            const n = cuts[i++ % cuts.length]!;
            seen = w.feed(stream.subarray(at, at + n)) ?? seen;
            at += n;
          }
          return seen === code && w.atBoundary;
        },
      ),
      { numRuns: 60 },
    );
  });

  it('reports mid-frame, and 1005 for a close frame without a code', () => {
    const w = new FrameWatcher();
    w.feed(frame(0x1, Buffer.from('hello'), true).subarray(0, 4));
    expect(w.atBoundary).toBe(false);
    expect(new FrameWatcher().feed(frame(0x8, Buffer.alloc(0), false))).toBe(1005);
    expect(new FrameWatcher().feed(closeFrame(1001, true))).toBe(1001);
    expect(new FrameWatcher().feed(closeFrame(1001, false))).toBe(1001);
  });
});
