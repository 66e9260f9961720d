import type { Knex } from 'knex';

/** The token types whose rows are keyed by a hash of their value (src/oidc/adapter.ts, storedTokenId). */
const TOKEN_TYPES = ['AccessToken', 'ClientCredentials', 'RefreshToken'];

/**
 * Tokens stored so far under their own value (oidc-provider's default: an opaque token's id is the
 * token) are keyed by its SHA-256, base64url without padding, as storedTokenId computes it, and
 * their payload loses its `jti` (the same value). Whoever can read the table can no longer use
 * what they read. Stop every process of an earlier release before this runs: such a process
 * neither finds these rows by their tokens nor stores its new tokens so that this release finds
 * them, and it would take a stored hash, presented as a token, for one (README, scaling out).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(
    `UPDATE oidc_payloads
        SET id = rtrim(translate(encode(sha256(convert_to(id, 'UTF8')), 'base64'), '+/', '-_'), '='),
            payload = payload - 'jti'
      WHERE type IN (${TOKEN_TYPES.map(() => '?').join(', ')})`,
    TOKEN_TYPES,
  );
}

/**
 * A hash cannot be turned back into its token: going back deletes the tokens (their users log in
 * again, their clients ask for new ones); sessions (Grants) stay, and end when they expire.
 */
export async function down(knex: Knex): Promise<void> {
  await knex('oidc_payloads').whereIn('type', TOKEN_TYPES).del();
}
