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
  ) {
    super(message);
    this.name = 'AppError';
  }

  static validation(invalidFields: InvalidField[], message = 'Request is invalid'): AppError {
    return new AppError('VALIDATION_ERROR', 400, message, invalidFields);
  }
}
