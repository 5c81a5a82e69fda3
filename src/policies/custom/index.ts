export {
  definePolicy,
  isPolicy,
  type Policy,
  type PolicyDefinition,
  type PolicyHandler,
  type PolicyIdentity,
  type PolicyPhase,
  type PolicyRequest,
  type OptionsSchema,
  type OptionsIssue,
} from './define-policy.js';
export { compilePolicy, middlewareProblem, type CompiledPolicy, type CompileResult } from './custom.js';
export { loadPolicyModules, type PolicyModules } from './loader.js';
export { policiesSchema, routePoliciesSchema, policyEntrySchema, type PoliciesConfig } from './schema.js';
export { policy, policyStage, type PolicyMiddlewareOptions } from './middleware.js';
