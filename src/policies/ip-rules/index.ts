export { ipRules, type IpRulesOptions } from './middleware.js';
export { createIpRulesStage, compileIpList } from './ip-rules.js';
export { ipRulesSchema, ipRuleProblem, type IpRulesConfig } from './schema.js';
