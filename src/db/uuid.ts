export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Whether `value` can be compared with a uuid column. PostgreSQL refuses the comparison with
 * anything else (invalid_text_representation, a 500 and, in a transaction, its end), so a lookup by
 * an id from a request answers "not found" for such a value without asking the database.
 */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}
