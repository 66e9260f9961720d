// oidc-provider warns once per load that Node 20 is not its preferred runtime (harmless; see
// STACK-NOTES). Jest loads it per test file, so the warning would bury real output.
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING: Unsupported runtime')) return;
  warn(...args);
};
