import type { RequestHandler } from 'express';
import { compileTrust } from '../../core/client-ip.js';
import { toMiddleware } from '../../core/middleware.js';
import { createIpRulesStage } from './ip-rules.js';
import { ipRulesSchema } from './schema.js';

export interface IpRulesOptions {
  /** Only these addresses and CIDRs may call. */
  allow?: string[];
  /** These addresses and CIDRs are refused, whatever `allow` says. */
  deny?: string[];
  /**
   * Which peers' `X-Forwarded-For` is believed for the client address, as the config's
   * `trustProxy` (`loopback`, CIDRs, a hop count, true). Default: nobody (the socket peer).
   */
  trustProxy?: boolean | number | string | string[];
}

/**
 * Express middleware refusing clients by address (403 forbidden, for `problemDetails()`).
 *
 * @example
 * app.use('/admin', ipRules({ allow: ['10.0.0.0/8', '::1'], trustProxy: 'loopback' }));
 */
export function ipRules(options: IpRulesOptions): RequestHandler {
  const { trustProxy, ...rules } = options;
  const stage = createIpRulesStage(ipRulesSchema.parse(rules));
  const trust =
    trustProxy === undefined || trustProxy === false || trustProxy === 0
      ? undefined
      : compileTrust(trustProxy);
  return toMiddleware('ipRules', stage === undefined ? [] : [stage], {
    prepare: (ctx) => {
      if (trust !== undefined && ctx.trust === undefined) {
        ctx.trust = trust;
        ctx.clientIpValue = undefined;
      }
    },
  });
}
