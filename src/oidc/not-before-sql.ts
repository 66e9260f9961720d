import type { Knex } from 'knex';
import { epochSecond } from './not-before';

/**
 * The new `tokens_not_before` of a client or tenant whose disabled state a change sets
 * (src/oidc/not-before.ts): disabling stamps the current second; enabling one that `wasDisabled`
 * (SQL over the row as it was) stamps the second before the current one (the caller has waited
 * for a second to begin: untilNextSecond); anything else keeps it. Never lowered.
 */
export function notBeforeChange(k: Knex, disabling: boolean, wasDisabled: string): Knex.Raw {
  const now = epochSecond();
  return disabling
    ? k.raw('greatest(tokens_not_before, ?::bigint)', [now])
    : k.raw(`case when ${wasDisabled} then greatest(tokens_not_before, ?::bigint) else tokens_not_before end`, [now - 1]);
}
