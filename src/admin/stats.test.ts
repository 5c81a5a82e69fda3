import { describe, expect, it } from 'vitest';
import { trafficStats } from './stats.js';

const TEXT = `# HELP tollgate_requests_total Requests.
# TYPE tollgate_requests_total counter
tollgate_requests_total{route="orders",method="GET",status_class="2xx"} 5
tollgate_requests_total{route="orders",method="POST",status_class="2xx"} 2
tollgate_requests_total{route="orders",method="GET",status_class="4xx"} 3
tollgate_requests_total{route="__proto__",method="GET",status_class="5xx"} 1
tollgate_requests_total{route="we\\"ird",method="GET",status_class="2xx"} 4
tollgate_rate_limit_rejections_total{route="orders",policy="burst"} 2
tollgate_quota_rejections_total{route="orders"} 1
tollgate_rate_limit_shadow_rejections_total{policy="trial"} 7
tollgate_request_duration_seconds_bucket{le="0.1",route="orders",method="GET",status_class="2xx"} 4
tollgate_request_duration_seconds_bucket{le="+Inf",route="orders",method="GET",status_class="2xx"} 5
tollgate_request_duration_seconds_sum{route="orders",method="GET",status_class="2xx"} 0.25
tollgate_request_duration_seconds_count{route="orders",method="GET",status_class="2xx"} 5
`;

describe('trafficStats (GET /stats)', () => {
  it('sums the totals and breaks them down per route, shadow would-be refusals included', () => {
    const s = trafficStats(TEXT, 'https://x/', 1000);
    expect(s.requests).toEqual({ '1xx': 0, '2xx': 11, '3xx': 0, '4xx': 3, '5xx': 1 });
    expect(s.rateLimited).toBe(2);
    expect(s.quotaRejected).toBe(1);
    expect(s.shadowRejected).toBe(7);
    expect(s.routes.orders).toEqual({
      requests: { '1xx': 0, '2xx': 7, '3xx': 0, '4xx': 3, '5xx': 0 },
      rateLimited: 2,
      quotaRejected: 1,
      durationSum: 0.25,
      durationCount: 5,
    });
    // An escaped quote in a label value is part of the id; `__proto__` is a plain key, no prototype change.
    expect(s.routes['we"ird']?.requests['2xx']).toBe(4);
    expect(Object.hasOwn(s.routes, '__proto__')).toBe(true);
    expect(Object.getPrototypeOf(s.routes)).toBe(Object.prototype);
    expect(JSON.parse(JSON.stringify(s)).routes.__proto__.requests['5xx']).toBe(1);
    expect(s.latency).toEqual([
      { le: 0.1, count: 4 },
      { le: null, count: 5 },
    ]);
  });
});
