import { execFileSync } from 'node:child_process';
import { WorkerSupervisor, workerExecArgv } from '../../src/cluster';
import { loadConfig } from '../../src/config';

const heap = (limitMb: number, minSemiSpaceMb = 0) => ({ limitMb, minSemiSpaceMb });

describe('worker heap limit (WORKER_HEAP_LIMIT_MB)', () => {
  test('workers get the configured old-space limit after the primary\'s own flags', () => {
    expect(workerExecArgv(['--enable-source-maps'], undefined, heap(1024))).toEqual(['--enable-source-maps', '--max-old-space-size=1024']);
    expect(workerExecArgv([], '', heap(300))).toEqual(['--max-old-space-size=300']);
  });

  test.each([
    [['--max-old-space-size=2048'], undefined],
    [['--max_old_space_size=2048'], undefined],
    [['--max-heap-size=2048'], undefined],
    [[], '--max-old-space-size=2048'],
    [[], '--enable-source-maps  --max-old-space-size=2048 --trace-warnings'],
  ])('an operator\'s own limit wins: execArgv %o, NODE_OPTIONS %o', (execArgv, nodeOptions) => {
    expect(workerExecArgv(execArgv, nodeOptions, heap(1024))).toEqual(execArgv);
  });

  test('0 leaves V8 its default', () => {
    expect(workerExecArgv(['--enable-source-maps'], undefined, heap(0))).toEqual(['--enable-source-maps']);
  });

  test('a flag that only starts alike is not a limit', () => {
    expect(workerExecArgv(['--max-old-space-size-ish'], undefined, heap(512))).toEqual(['--max-old-space-size-ish', '--max-old-space-size=512']);
  });

  test('configuration: default 1024, and from the environment (bad values: tests/unit/config.test.ts)', () => {
    expect(loadConfig({ NODE_ENV: 'test' }).workerHeapLimitMb).toBe(1024);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_HEAP_LIMIT_MB: '0' }).workerHeapLimitMb).toBe(0);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_HEAP_LIMIT_MB: '768' }).workerHeapLimitMb).toBe(768);
  });
});

describe('worker young generation (WORKER_MIN_SEMI_SPACE_MB)', () => {
  test('workers get the configured minimum semi-space, after the old-space limit', () => {
    expect(workerExecArgv(['--enable-source-maps'], undefined, heap(1024, 16))).toEqual([
      '--enable-source-maps',
      '--max-old-space-size=1024',
      '--min-semi-space-size=16',
    ]);
    expect(workerExecArgv([], undefined, heap(0, 8))).toEqual(['--min-semi-space-size=8']);
  });

  test.each([
    [['--min-semi-space-size=4'], undefined],
    [['--min_semi_space_size=4'], undefined],
  ])('an operator\'s own minimum wins: execArgv %o, NODE_OPTIONS %o', (execArgv, nodeOptions) => {
    expect(workerExecArgv(execArgv, nodeOptions, heap(0, 16))).toEqual(execArgv);
  });

  test('a maximum of the operator\'s is left with ours beside it (V8 takes the smaller)', () => {
    expect(workerExecArgv(['--max-semi-space-size=8'], undefined, heap(0, 16))).toEqual(['--max-semi-space-size=8', '--min-semi-space-size=16']);
  });

  test('0 leaves V8 its default', () => {
    expect(workerExecArgv([], undefined, heap(1024, 0))).toEqual(['--max-old-space-size=1024']);
  });

  test('configuration: default 16, and from the environment', () => {
    expect(loadConfig({ NODE_ENV: 'test' }).workerMinSemiSpaceMb).toBe(16);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_MIN_SEMI_SPACE_MB: '0' }).workerMinSemiSpaceMb).toBe(0);
    expect(loadConfig({ NODE_ENV: 'test', WORKER_MIN_SEMI_SPACE_MB: '32' }).workerMinSemiSpaceMb).toBe(32);
  });

  test('V8 takes the flag: a new process\'s young generation starts at the minimum, not at 1 MB', () => {
    // The maximum named too, so that the host's memory (V8 sizes its default maximum from it) and
    // the caller's NODE_OPTIONS cannot change the result.
    const newSpaceMb = (flags: string[]) =>
      Number(
        execFileSync(
          process.execPath,
          [...flags, '--max-semi-space-size=16', '-e', 'const s = require("v8").getHeapSpaceStatistics().find((x) => x.space_name === "new_space"); console.log(s.space_size / 1048576)'],
          { env: { ...process.env, NODE_OPTIONS: '' } },
        )
          .toString()
          .trim(),
      );
    expect(newSpaceMb(workerExecArgv([], undefined, heap(1024, 16)))).toBeGreaterThanOrEqual(16);
    expect(newSpaceMb(workerExecArgv([], undefined, heap(1024, 0)))).toBeLessThan(16);
  });

  test('the two flags are decided apart: an operator\'s limit leaves our minimum, and the reverse', () => {
    expect(workerExecArgv([], '--max-old-space-size=2048', heap(1024, 16))).toEqual(['--min-semi-space-size=16']);
    expect(workerExecArgv(['--min-semi-space-size=4'], undefined, heap(1024, 16))).toEqual(['--min-semi-space-size=4', '--max-old-space-size=1024']);
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

describe('the primary, when a worker exits', () => {
  test('while the first workers start, one that never listened stops the server', () => {
    const s = new WorkerSupervisor(2);
    s.listening(1);
    expect(s.exited(2)).toEqual({ action: 'stop' });
  });

  test('once all have listened: a worker that dies is replaced at once', () => {
    const s = new WorkerSupervisor(2);
    s.listening(1);
    s.listening(2);
    expect(s.exited(1)).toEqual({ action: 'replace', afterMs: 0 });
  });

  test('a replacement that dies before it listens is tried again, later each time, never stopping the healthy ones', () => {
    const s = new WorkerSupervisor(2);
    s.listening(1);
    s.listening(2);
    expect(s.exited(2)).toEqual({ action: 'replace', afterMs: 0 });
    const delays = [3, 4, 5, 6, 7, 8, 9, 10, 11].map((id) => s.exited(id));
    expect(delays.map((d) => d.action)).toEqual(Array(9).fill('replace'));
    expect(delays.map((d) => (d as { afterMs: number }).afterMs)).toEqual([250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    s.listening(12); // one finally starts: the next failure waits the shortest delay again
    expect(s.exited(13)).toEqual({ action: 'replace', afterMs: 250 });
  });
});
