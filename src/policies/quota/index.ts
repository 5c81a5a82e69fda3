export { periodOf, type QuotaPeriod, type PeriodWindow } from './period.js';
export { planQuotaSchema, routeQuotaSchema, type PlanQuotaConfig, type RouteQuotaConfig } from './schema.js';
export { quota, type QuotaOptions } from '../rate-limit/middleware.js';
