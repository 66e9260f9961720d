/** A field-level validation problem, rendered as seed 001's `syntaxErrors.invalidFields` entry. */
export interface InvalidField {
  fieldName: string;
  error: string;
}

/**
 * The one error type of our own routes and services. The HTTP layer renders it as
 * `{message, code}` (or `{message, syntaxErrors}` for validation) with `status`.
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly invalidFields?: InvalidField[],
    readonly headers?: Record<string, string>,
    /** RFC 6750 §3: the bearer token does not reach this resource; rendered as a WWW-Authenticate challenge. */
    readonly insufficientScope?: { scope?: string },
  ) {
    super(message);
    this.name = 'AppError';
  }

  /**
   * A 403 for a valid bearer token that does not reach the resource (the wrong kind of token, not
   * the scope or the reach it needs): RFC 6750 §3.1's `insufficient_scope`, with the scope it
   * needs when one would do.
   */
  static insufficientScope(code: string, message: string, scope?: string): AppError {
    return new AppError(code, 403, message, undefined, undefined, { scope });
  }

  static validation(invalidFields: InvalidField[], message = 'Request is invalid'): AppError {
    return new AppError('VALIDATION_ERROR', 400, message, invalidFields);
  }
}
