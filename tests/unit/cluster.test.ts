import { workerExecArgv } from '../../src/cluster';
import { loadConfig } from '../../src/config';

describe('worker heap limit (WORKER_HEAP_LIMIT_MB)', () => {
  test('workers get the configured old-space limit after the primary\'s own flags', () => {
    expect(workerExecArgv(['--enable-source-maps'], undefined, 1024)).toEqual(['--enable-source-maps', '--max-old-space-size=1024']);
    expect(workerExecArgv([], '', 300)).toEqual(['--max-old-space-size=300']);
  });

  test.each([
    [['--max-old-space-size=2048'], undefined],
    [['--max_old_space_size=2048'], undefined],
    [['--max-heap-size=2048'], undefined],
    [[], '--max-old-space-size=2048'],
    [[], '--enable-source-maps  --max-old-space-size=2048 --trace-warnings'],
  ])('an operator\'s own limit wins: execArgv %o, NODE_OPTIONS %o', (execArgv, nodeOptions) => {
    expect(workerExecArgv(execArgv, nodeOptions, 1024)).toEqual(execArgv);
  });

  test('0 leaves V8 its default', () => {
    expect(workerExecArgv(['--enable-source-maps'], undefined, 0)).toEqual(['--enable-source-maps']);
  });

  test('a flag that only starts alike is not a limit', () => {
    expect(workerExecArgv(['--max-old-space-size-ish'], undefined, 512)).toEqual(['--max-old-space-size-ish', '--max-old-space-size=512']);
  });

  test('configuration: default 1024, and from the environment (bad values: tests/unit/config.test.ts)', () => {
    expect(loadConfig({ NODE_ENV: 'test' }).workerHeapLimitMb).toBe(1024);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_HEAP_LIMIT_MB: '0' }).workerHeapLimitMb).toBe(0);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_HEAP_LIMIT_MB: '768' }).workerHeapLimitMb).toBe(768);
  });
});

describe('a cluster primary does not load the server', () => {
  // Its heap is then half as large, and so is the work of V8's idle collections, which take the
  // cores from the workers (src/cluster.ts, loadServer).
  test('loading the CLI evaluates neither the server nor the services', () => {
    jest.isolateModules(() => {
      jest.doMock('../../src/server', () => {
        throw new Error('the server was loaded');
      });
      jest.doMock('../../src/app', () => {
        throw new Error('the services were loaded');
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      expect(() => require('../../src/cli/main')).not.toThrow();
    });
  });
});
