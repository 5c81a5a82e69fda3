import type { AuditQuery, AuditRecord, AuditStore } from './audit.js';

export const AUDIT_MESSAGE = 'tollgate:audit';

/**
 * The audit store of a cluster worker without Redis: records go to the primary (which answers
 * `/requests`) in batches over the IPC channel, never one message per request.
 */
export class ForwardingAuditStore implements AuditStore {
  readonly #send: (message: unknown) => void;
  #pending: string[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(send: (message: unknown) => void) {
    this.#send = send;
    this.#timer = setInterval(() => void this.flush(), 100);
    this.#timer.unref();
  }

  append(_record: AuditRecord, json: string): void {
    this.#pending.push(json);
    if (this.#pending.length >= 256) void this.flush();
  }

  get(): Promise<AuditRecord | undefined> {
    return Promise.resolve(undefined);
  }

  getAll(): Promise<AuditRecord[]> {
    return Promise.resolve([]);
  }

  list(_query: AuditQuery): Promise<AuditRecord[]> {
    return Promise.resolve([]);
  }

  flush(): Promise<void> {
    if (this.#pending.length > 0) {
      const records = this.#pending;
      this.#pending = [];
      this.#send({ type: AUDIT_MESSAGE, records });
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    clearInterval(this.#timer);
    return this.flush();
  }
}
