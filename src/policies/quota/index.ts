export { quota, type QuotaOptions } from './middleware.js';
export {
  quotaHolder,
  quotaLimit,
  quotaCounter,
  remainingCounter,
  remainingSpec,
  refundUnlessAnswered,
  type QuotaBy,
} from './quota.js';
export { periodOf, type PeriodWindow } from './period.js';
export { planQuotaSchema, routeQuotaSchema, type PlanQuotaConfig, type RouteQuotaConfig } from './schema.js';
