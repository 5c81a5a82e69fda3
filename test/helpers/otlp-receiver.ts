import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/*
 * An OTLP/HTTP trace receiver on a loopback port that decodes what it gets with the official
 * opentelemetry-proto definitions (test/fixtures/opentelemetry-proto, release v1.11.0, loaded by
 * protobufjs): a payload the gateway's exporter got wrong fails to decode, or decodes wrong.
 */

const PROTO_ROOT = fileURLToPath(new URL('../fixtures/opentelemetry-proto/', import.meta.url));
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => PROTO_ROOT + target;
root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto');
const ExportTraceServiceRequest = root.lookupType(
  'opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest',
);
const ExportTraceServiceResponse = root.lookupType(
  'opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse',
);

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  /** 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', … */
  kind: string;
  attributes: Record<string, string | number | boolean>;
  /** 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET', … */
  status: string;
  resource: Record<string, string | number | boolean>;
}

export interface OtlpRequest {
  path: string;
  method: string;
  headers: IncomingHttpHeaders;
  /** The raw body as received (searched for secrets byte by byte). */
  body: Buffer;
}

export interface OtlpReceiver {
  /** The base URL (`telemetry.otlp.endpoint`). */
  url: string;
  requests: OtlpRequest[];
  spans: ReceivedSpan[];
  /** Resolves once at least `n` spans arrived (bounded by `timeoutMs`; rejects after it). */
  waitForSpans(n: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
  doubleValue?: number;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}

function attributesOf(list: KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of list ?? []) {
    const v = kv.value ?? {};
    out[kv.key] =
      v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue ?? ''));
  }
  return out;
}

/** Decodes one ExportTraceServiceRequest into flat spans. */
export function decodeTraces(body: Buffer): ReceivedSpan[] {
  const message = ExportTraceServiceRequest.decode(body);
  const request = ExportTraceServiceRequest.toObject(message, {
    enums: String,
    longs: String,
    bytes: String, // base64
    defaults: true,
  }) as {
    resourceSpans: Array<{
      resource?: { attributes?: KeyValue[] };
      scopeSpans: Array<{
        spans: Array<{
          traceId: string;
          spanId: string;
          parentSpanId: string;
          name: string;
          kind: string;
          attributes: KeyValue[];
          status?: { code?: string };
        }>;
      }>;
    }>;
  };
  const hex = (b64: string) => Buffer.from(b64, 'base64').toString('hex');
  const spans: ReceivedSpan[] = [];
  for (const rs of request.resourceSpans) {
    const resource = attributesOf(rs.resource?.attributes);
    for (const ss of rs.scopeSpans)
      for (const s of ss.spans)
        spans.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name,
          kind: s.kind,
          attributes: attributesOf(s.attributes),
          status: s.status?.code ?? 'STATUS_CODE_UNSET',
          resource,
        });
  }
  return spans;
}

/** Starts the receiver; `status` answers every export with that status instead of 200 (a failing collector). */
export async function startOtlpReceiver(options: { status?: number } = {}): Promise<OtlpReceiver> {
  const requests: OtlpRequest[] = [];
  const spans: ReceivedSpan[] = [];
  const waiters = new Set<() => void>();
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ path: req.url ?? '', method: req.method ?? '', headers: req.headers, body });
      if (options.status !== undefined && options.status !== 200) {
        res.writeHead(options.status).end();
        return;
      }
      if (req.url !== '/v1/traces' || req.headers['content-type'] !== 'application/x-protobuf') {
        res.writeHead(404).end();
        return;
      }
      spans.push(...decodeTraces(body));
      const answer = ExportTraceServiceResponse.encode(ExportTraceServiceResponse.create({})).finish();
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(Buffer.from(answer));
      for (const wake of [...waiters]) wake();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    spans,
    waitForSpans(n, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (spans.length < n) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(spans);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`only ${spans.length} of ${n} spans arrived within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
