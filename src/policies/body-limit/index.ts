export { createBodyLimitStage } from './body-limit.js';
export { createReadBodyStage } from './read-body.js';
