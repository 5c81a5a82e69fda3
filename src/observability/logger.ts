import { pino, type Logger, type DestinationStream, type LoggerOptions } from 'pino';
import { PinoPretty } from 'pino-pretty';
import { isoTime } from '../core/clock.js';

export type { Logger };

export interface LoggerSettings {
  level: string;
  format: 'auto' | 'json' | 'pretty';
  /** Write here instead of stdout (tests capture the output this way). */
  destination?: DestinationStream;
  /** `NODE_ENV`, for `format: auto`. */
  nodeEnv?: string | undefined;
  /** Whether stdout is a terminal, for `format: auto`. */
  isTty?: boolean;
}

/**
 * Paths pino removes from anything logged: credentials must never reach a log line even when an
 * error object or a header map is logged whole.
 */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'headers["x-signature"]',
  'headers["set-cookie"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["x-signature"]',
  'key',
  'token',
  'secret',
  'signingSecret',
  'password',
  // `telemetry.otlp.headers` are the collector's credentials, wherever a config object is logged.
  'otlp.headers',
  'telemetry.otlp.headers',
];

/**
 * The process logger. JSON lines by default; pretty output only on a terminal outside
 * production. One logger for the process: the access log writes one line per request with
 * explicit fields instead of a per-request child logger (pino-http's child costs ~30 µs).
 */
const ACCESS_LINE = Symbol.for('tollgate.accessLine');

/** Writes one access-log line given the request record's JSON (whose first member is `time`). */
export type AccessLineWriter = (recordJson: string) => void;

/**
 * The fast path for the access log of a JSON logger made by `createLogger`: the line is the
 * record's own JSON (serialised once per request, shared with the audit trail) framed with pino's
 * `level`, `time`, `pid` and `msg`, and written to the same pino destination. The record holds
 * no secret by construction, so pino's redaction has nothing to do. Undefined for other loggers
 * (pretty output, a logger given by a library user): they get `logger.info`.
 */
export function accessLineWriter(logger: Logger): AccessLineWriter | undefined {
  return (logger as unknown as Record<symbol, AccessLineWriter | undefined>)[ACCESS_LINE];
}

function attachAccessLine(logger: Logger, destination: { write(line: string): unknown }): Logger {
  const pid = process.pid;
  const write: AccessLineWriter = (json) => {
    // The record's own `time` (arrival) is its first member; the line's `time` is when it was written.
    const rest = json.slice(json.indexOf(',') + 1, -1);
    destination.write(
      `{"level":"info","time":"${isoTime(Date.now())}","pid":${pid},${rest},"msg":"request"}\n`,
    );
  };
  (logger as unknown as Record<symbol, AccessLineWriter>)[ACCESS_LINE] = write;
  return logger;
}

/**
 * Characters of lines held before they are handed to the destination in one write: its own
 * `minLength`, so lines leave no later than when sonic-boom buffered them itself. 64 KiB (about
 * 100 access lines): each asynchronous write is a hop to libuv's thread pool and back (five
 * futex calls, an epoll wake and an eventfd read besides the write): in process a line costs
 * 2.2–2.7 µs this way against 3.8–4.1 µs in 4 KiB writes (docs/performance.md).
 * A crash (not an exit: exit flushes) loses at most this much, or 250 ms of lines.
 */
export const LINE_BATCH_CHARS = 65_536;

export function createLogger(settings: LoggerSettings): Logger {
  const options: LoggerOptions = {
    level: settings.level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  if (settings.destination) {
    const logger = pino(options, settings.destination);
    return settings.format === 'pretty' ? logger : attachAccessLine(logger, settings.destination);
  }
  const pretty =
    settings.format === 'pretty' ||
    (settings.format === 'auto' &&
      (settings.isTty ?? process.stdout.isTTY) &&
      settings.nodeEnv !== 'production');
  if (pretty)
    return pino(options, PinoPretty({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid' }));
  // Buffered: lines leave in 64 KiB writes instead of one write per line (a syscall per request
  // costs more than the rest of the line), and at most 250 ms late when traffic is low. sonic-boom
  // requires minLength < maxWrite (16 KiB by default): a batch goes out in one write.
  const destination = pino.destination({
    dest: 1,
    sync: false,
    minLength: LINE_BATCH_CHARS,
    maxWrite: 4 * LINE_BATCH_CHARS,
  });
  const lines = new LineBatch(destination);
  const timer = setInterval(() => {
    lines.drain();
    destination.flush();
  }, 250);
  timer.unref();
  process.once('exit', () => {
    try {
      lines.drain();
      destination.flushSync();
    } catch {
      // stdout already closed: nothing more can be written
    }
  });
  return attachAccessLine(pino(options, lines), lines);
}

/**
 * Lines gathered and handed to sonic-boom joined, `LINE_BATCH_CHARS` at a time, instead of one
 * `write` each: sonic-boom appends each line to its pending string and measures that string's
 * UTF-8 length on every write, which flattens it — a copy of the whole buffer per line, half its
 * threshold a request on average. Every line goes through the same batch in
 * order (pino's own lines too: a warning is never written ahead of the access lines before it);
 * the 250 ms timer, `logger.flush()` and exit drain it.
 */
export class LineBatch implements DestinationStream {
  readonly #destination: DestinationStream;
  #pending: string[] = [];
  #chars = 0;

  constructor(destination: DestinationStream) {
    this.#destination = destination;
  }

  write(line: string): void {
    this.#pending.push(line);
    this.#chars += line.length;
    if (this.#chars >= LINE_BATCH_CHARS) this.drain();
  }

  /** What `logger.flush()` calls: the batch, then the destination's buffer. */
  flush(cb?: (err?: Error) => void): void {
    this.drain();
    const d = this.#destination as DestinationStream & { flush?: (cb: (err?: Error) => void) => void };
    if (typeof d.flush === 'function') d.flush(cb ?? (() => undefined));
    else cb?.();
  }

  drain(): void {
    if (this.#chars === 0) return;
    const text = this.#pending.length === 1 ? this.#pending[0]! : this.#pending.join('');
    this.#pending = [];
    this.#chars = 0;
    this.#destination.write(text);
  }
}

/** A logger that drops everything (library use without a logger, some tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
