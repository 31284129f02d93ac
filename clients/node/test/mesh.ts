/**
 * A real mesh for the Node tests: the repository's Python engine and ops servers, started from its
 * `.venv` on loopback with port 0 (each prints `[ENGINE|OPS] ready on HOST:PORT` once bound), with the
 * demo venues, registry, capital policy and risk limits, and every file (journals, state, spans) in a
 * temp folder. Ops writes its spans as JSON lines to `spanFile`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { MeshRpcError, OpsClient } from '../src';

export const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const DEMO = path.join(REPO, 'config', 'demo');
export const PYTHON = process.env.NAUTILUS_PYTHON ?? path.join(REPO, '.venv', 'bin', 'python');
export const MOMENTUM_TOKEN = 'node-test-momentum-token';
export const MEANREV_TOKEN = 'node-test-meanrev-token';
export const ADMIN_TOKEN = 'node-test-admin-token';
const ENGINE_TOKEN = 'node-test-engine-token';
const START_TIMEOUT_MS = 30_000;

/** A running server process and everything it printed. */
class Server {
  output = '';
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    process.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    process.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => process.once('exit', (code) => resolve(code)));
  }

  /** The address from the `ready on HOST:PORT` log line, once the server has bound its port. */
  async ready(label: string): Promise<string> {
    const pattern = new RegExp(`\\[${label}\\] ready on (\\S+:\\d+)`);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const match = pattern.exec(this.output);
      if (match) return match[1];
      if (this.process.exitCode !== null) {
        throw new Error(`${this.name} exited with ${this.process.exitCode} before serving:\n${this.output}`);
      }
      if (Date.now() > deadline) throw new Error(`${this.name} not ready within ${START_TIMEOUT_MS} ms:\n${this.output}`);
      await sleep(50);
    }
  }

  /** SIGTERM (graceful stop), SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns a value other than undefined, or fails after `withinMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, withinMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${withinMs} ms`);
    await sleep(50);
  }
}

function writeJson(file: string, data: unknown): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(data, null, 2));
  return file;
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf-8')) as Record<string, unknown>;
}

const running = new Set<Server>();
process.once('exit', () => {
  for (const server of running) server.process.kill('SIGKILL');
});

function startServer(name: string, module: string, config: string, cwd: string): Server {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: '1' };
  // Spans must go to the span file, not to a collector this machine may have configured.
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  delete env.OTEL_TRACES_SAMPLER;
  delete env.OTEL_TRACES_SAMPLER_ARG;
  const child = spawn(PYTHON, ['-m', module, '--config', config], {
    cwd,
    env: { ...env, PYTHONPATH: REPO },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server = new Server(name, child);
  running.add(server);
  void server.exited.then(() => running.delete(server));
  return server;
}

/** A running mesh: ops and engine addresses, the temp folder and ops' span file. */
export interface Mesh {
  opsAddress: string;
  engineAddress: string;
  dir: string;
  spanFile: string;
  logs(): string;
  stop(): Promise<void>;
}

/**
 * Starts engine then ops, and waits until ops trades: a flat SubmitSignal (target 0) answers with a
 * decision instead of STALE_MARK, i.e. ops is linked to the engine and has marks.
 */
export async function startMesh(): Promise<Mesh> {
  if (!fs.existsSync(PYTHON)) throw new Error(`no Python at ${PYTHON}: run \`make install\` at the repository root`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nautilus-node-'));
  const engineDemo = readJson(path.join(DEMO, 'engine.json'));
  const engineConfig = writeJson(path.join(dir, 'engine.json'), {
    ...engineDemo,
    port: 0,
    metrics_port: null,
    ops_token: ENGINE_TOKEN,
    journal_path: path.join(dir, 'engine', 'journal.jsonl'),
    tick_interval_ms: 20,
    span_file: path.join(dir, 'spans', 'engine.jsonl'),
  });
  const registry = readJson(path.join(DEMO, 'registry.json')) as { strategies: Record<string, { canary?: Record<string, unknown> }> };
  for (const strategy of Object.values(registry.strategies)) {
    if (strategy.canary) {
      // The canary moves only when a test tells it to.
      Object.assign(strategy.canary, { min_dwell_seconds: 3600, shadow_min_dwell_seconds: 3600 });
    }
  }
  const engine = startServer('engine', 'engine_server', engineConfig, dir);
  let ops: Server | undefined;
  const stop = async (): Promise<void> => {
    await ops?.stop();
    await engine.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const engineAddress = await engine.ready('ENGINE');
    const spanFile = path.join(dir, 'spans', 'ops.jsonl');
    const opsConfig = writeJson(path.join(dir, 'ops.json'), {
      host: '127.0.0.1',
      port: 0,
      metrics_port: null,
      engine_address: engineAddress,
      engine_token: ENGINE_TOKEN,
      admin_token: ADMIN_TOKEN,
      strategies: {
        momentum: { token: MOMENTUM_TOKEN, models: ['momentum_v1', 'momentum_v2'] },
        meanrev: { token: MEANREV_TOKEN, models: ['meanrev_v1'] },
      },
      registry_path: writeJson(path.join(dir, 'registry.json'), registry),
      capital_policy_path: path.join(DEMO, 'capital_policy.json'),
      risk_limits_path: path.join(DEMO, 'risk_limits.json'),
      state_dir: path.join(dir, 'ops'),
      span_file: spanFile,
      sample_interval_seconds: 0.2,
      allocation_interval_seconds: 3600,
    });
    ops = startServer('ops', 'ops_server', opsConfig, dir);
    const opsAddress = await ops.ready('OPS');
    const client = new OpsClient(opsAddress, { strategyToken: MOMENTUM_TOKEN, timeoutMs: 2000 });
    let probe = 0;
    try {
      await eventually(
        async () => {
          try {
            await client.submitSignal({ signalId: `ready-${probe++}`, modelId: 'momentum_v1', instrument: 'BTC-USD', target: 0 });
            return true;
          } catch (error) {
            if (error instanceof MeshRpcError && (error.reason === 'STALE_MARK' || error.unreachable)) return undefined;
            throw error;
          }
        },
        START_TIMEOUT_MS,
        'ops trading (linked to the engine, with marks)',
      );
    } finally {
      client.close();
    }
    const servers = [engine, ops];
    return {
      opsAddress,
      engineAddress,
      dir,
      spanFile,
      logs: () => servers.map((s) => `--- ${s.name}\n${s.output}`).join('\n'),
      stop,
    };
  } catch (error) {
    const logs = `--- engine\n${engine.output}\n--- ops\n${ops?.output ?? ''}`;
    await stop();
    throw new Error(`${String(error)}\n${logs}`);
  }
}

/** The spans ops wrote so far (JSON lines; a torn last line is skipped). */
export interface SpanRecord {
  trace_id: string;
  span_id: string;
  parent_span_id: string;
  name: string;
  kind: string;
  service: string;
  attributes: Record<string, unknown>;
}

export function readSpans(file: string): SpanRecord[] {
  if (!fs.existsSync(file)) return [];
  const spans: SpanRecord[] = [];
  for (const line of fs.readFileSync(file, 'utf-8').split('\n')) {
    if (!line.trim()) continue;
    try {
      spans.push(JSON.parse(line) as SpanRecord);
    } catch {
      // the exporter may be mid-write
    }
  }
  return spans;
}
