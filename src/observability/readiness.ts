export type CheckStatus = 'ok' | 'degraded' | 'down';

export interface CheckResult {
  status: CheckStatus;
  /** When true, `down` makes the gateway not ready (503). */
  critical?: boolean;
  [detail: string]: unknown;
}

export type Check = () => CheckResult | Promise<CheckResult>;

/** Named dependency checks behind `/readyz`. */
export class ReadinessRegistry {
  readonly #checks = new Map<string, Check>();

  register(name: string, check: Check): void {
    this.#checks.set(name, check);
  }

  async report(): Promise<{ ready: boolean; checks: Record<string, CheckResult> }> {
    const checks: Record<string, CheckResult> = {};
    let ready = true;
    await Promise.all(
      [...this.#checks].map(async ([name, check]) => {
        let result: CheckResult;
        try {
          result = await check();
        } catch (err) {
          result = {
            status: 'down',
            critical: true,
            error: err instanceof Error ? err.message : String(err),
          };
        }
        checks[name] = result;
        if (result.status === 'down' && result.critical !== false) ready = false;
      }),
    );
    return { ready, checks };
  }
}
