declare module 'dumb-passwords' {
  /** True when the password is one of the 10,000 most common passwords. */
  export function check(password: string): boolean;
  const dumbPasswords: { check(password: string): boolean };
  export default dumbPasswords;
}
