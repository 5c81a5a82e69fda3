export { fault, type FaultOptions } from './middleware.js';
export { createFaultStage, type FaultKind, type FaultStageOptions } from './fault.js';
export {
  faultSchema,
  FAULT_ABORT_SLUGS,
  MAX_FAULT_DELAY_MS,
  type FaultConfig,
  type FaultAbortStatus,
} from './schema.js';
