/** Jest runs the TypeScript sources through ts-jest. oidc-provider, jose and the OAuth
 * client libraries are ESM-only, so they are transformed too (Jest's loader cannot load ESM
 * on Node 20). Type errors are caught by `tsc --noEmit` in `npm test`, not here. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.[tj]s$': ['ts-jest', { tsconfig: { allowJs: true, isolatedModules: true, module: 'commonjs', moduleResolution: 'node10', ignoreDeprecations: '6.0', types: ['node', 'jest'] }, diagnostics: false }],
  },
  transformIgnorePatterns: ['/node_modules/(?!(oidc-provider|jose|openid-client|oauth4webapi|@koa/router)/)'],
  setupFiles: ['<rootDir>/tests/helpers/quiet.ts'],
  testTimeout: 30000,
  maxWorkers: 2,
};
