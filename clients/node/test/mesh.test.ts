/**
 * The Node client against a real mesh (Python engine + ops on loopback, started by test/mesh.ts).
 */
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { status } from '@grpc/grpc-js';

import {
  type Fill,
  formatTraceparent,
  type MeshEvent,
  MeshRpcError,
  newSpanContext,
  OpsAdminClient,
  parseTraceparent,
  OpsClient,
  type SignalDecision,
  type SignalStream,
} from '../src';
import { ADMIN_TOKEN, eventually, MEANREV_TOKEN, type Mesh, MOMENTUM_TOKEN, readSpans, startMesh } from './mesh';

let mesh: Mesh;
let ops: OpsClient;
let counter = 0;

function signalId(prefix: string): string {
  counter += 1;
  return `node-${prefix}-${process.pid}-${counter}`;
}

/** Collects a stream's decisions and fills as they arrive. */
function collect(stream: SignalStream): { decisions: SignalDecision[]; fills: Fill[]; done: Promise<unknown> } {
  const out = { decisions: [] as SignalDecision[], fills: [] as Fill[], done: Promise.resolve() as Promise<unknown> };
  out.done = (async () => {
    try {
      for await (const frame of stream) {
        out.decisions.push(...frame.decisions);
        out.fills.push(...frame.fills);
      }
      return undefined;
    } catch (error) {
      return error;
    }
  })();
  return out;
}

/** Runs the compiled example as a user would; resolves with its exit code and output. */
function momentumExample(token: string, seconds: number): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = path.join(__dirname, '..', 'examples', 'momentum.js');
  const args = ['--ops', mesh.opsAddress, '--engine', mesh.engineAddress, '--token', token, '--duration', String(seconds)];
  return new Promise((resolve) => {
    execFile(process.execPath, [script, ...args], { timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

async function rejection(call: Promise<unknown>): Promise<MeshRpcError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof MeshRpcError, `expected a MeshRpcError, got ${String(error)}`);
    return error;
  }
  assert.fail('the call succeeded');
}

describe('node client against a running mesh', { timeout: 120_000 }, () => {
  before(async () => {
    mesh = await startMesh();
    ops = new OpsClient(mesh.opsAddress, { strategyToken: MOMENTUM_TOKEN });
  }, { timeout: 60_000 });

  after(async () => {
    ops?.close();
    await mesh?.stop();
  });

  test('streamSignals: an accepted signal comes back as fills on the same stream, and a bad one is rejected in-band', async () => {
    const stream = ops.streamSignals();
    const seen = collect(stream);
    const good = signalId('fill');
    const bad = signalId('bad');
    await stream.send([
      { signalId: good, modelId: 'momentum_v1', instrument: 'BTC-USD', target: 0.1 },
      { signalId: bad, modelId: 'momentum_v1', instrument: 'BTC-USD', target: 7 },
    ]);
    const decision = await eventually(() => seen.decisions.find((d) => d.signalId === good), 15_000, 'decision');
    assert.equal(decision.status, 'DECISION_STATUS_ACCEPTED');
    assert.equal(decision.mode, 'ROUTING_MODE_LIVE');
    assert.ok(Number.parseFloat(decision.quantity) > 0, `quantity ${decision.quantity}`);
    assert.match(decision.trace?.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);

    const filled = await eventually(() => {
      const fills = seen.fills.filter((f) => f.signalId === good);
      const total = fills.reduce((sum, f) => sum + Number.parseFloat(f.quantity), 0);
      return Math.abs(total - Number.parseFloat(decision.quantity)) < 1e-9 ? fills : undefined;
    }, 15_000, 'fills adding up to the order');
    for (const fill of filled) {
      assert.equal(fill.clientOrderId, decision.clientOrderId);
      assert.equal(fill.modelId, 'momentum_v1');
      assert.equal(fill.side, decision.side);
      assert.ok(Number.parseFloat(fill.price) > 0);
      assert.ok(fill.execId.length > 0);
    }

    const rejected = await eventually(() => seen.decisions.find((d) => d.signalId === bad), 5_000, 'rejection');
    assert.equal(rejected.status, 'DECISION_STATUS_REJECTED');
    assert.equal(rejected.error?.kind, 'validation_failed');
    assert.equal(rejected.error?.field, 'target');

    const positions = await ops.getPositions('momentum_v1');
    const btc = positions.find((p) => p.instrument === 'BTC-USD');
    assert.ok(btc !== undefined && Number.parseFloat(btc.quantity) !== 0, JSON.stringify(positions));

    stream.end();
    assert.equal(await seen.done, undefined);
  });

  test('streamSignals with resumeAfterFillSeq: fills applied while no stream was open come first, once', async () => {
    const newest = await ops.listFills('momentum_v1', 1);
    const since = newest.fills[0]?.seq ?? '0';
    const missed = await ops.submitSignal({ signalId: signalId('missed'), modelId: 'momentum_v1', instrument: 'ETH-USD', target: 0.05 });
    assert.equal(missed.status, 'DECISION_STATUS_ACCEPTED');
    await eventually(async () => {
      const page = await ops.listFills('momentum_v1', 10);
      return page.fills.some((f) => f.clientOrderId === missed.clientOrderId) ? true : undefined;
    }, 15_000, 'the missed fill applied');
    const stream = ops.streamSignals({ resumeAfterFillSeq: since });
    const seen = collect(stream);
    const replayed = await eventually(() => seen.fills.find((f) => f.clientOrderId === missed.clientOrderId), 15_000, 'replayed fill');
    assert.ok(BigInt(replayed.seq) > BigInt(since));
    stream.end();
    assert.equal(await seen.done, undefined);
    assert.equal(seen.fills.filter((f) => f.execId === replayed.execId).length, 1);
  });

  test("streamSignals: a send larger than ops' frame limit is split, and every signal is decided", async () => {
    const limit = (await ops.getStreamLimits()).maxSignalsPerFrame;
    assert.ok(limit > 0 && limit <= 2000, `limit ${limit}`);
    const stream = ops.streamSignals({ maxSignalsPerFrame: limit });
    const seen = collect(stream);
    const ids = Array.from({ length: limit + 1 }, () => signalId('split')); // one frame would be refused whole
    await stream.send(ids.map((id) => ({ signalId: id, modelId: 'momentum_v1', instrument: 'NOPE-USD', target: 0.1 })));
    await eventually(() => (ids.every((id) => seen.decisions.some((d) => d.signalId === id)) ? true : undefined), 15_000, 'every decision');
    assert.ok(seen.decisions.every((d) => d.error?.code !== 'FRAME_TOO_LARGE'));
    stream.end();
    assert.equal(await seen.done, undefined);
  });

  test('submitSignal: a target out of range answers INVALID_ARGUMENT with the field violation and ErrorDetail decoded', async () => {
    const error = await rejection(
      ops.submitSignal({ signalId: signalId('range'), modelId: 'momentum_v1', instrument: 'BTC-USD', target: 2 }),
    );
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.codeName, 'INVALID_ARGUMENT');
    assert.equal(error.reason, 'OUT_OF_RANGE');
    assert.equal(error.errorInfo?.domain, 'nautilus-mesh');
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ['target'],
    );
    assert.equal(error.detail?.kind, 'validation_failed');
    assert.equal(error.detail?.code, 'OUT_OF_RANGE');
    assert.equal(error.detail?.field, 'target');
  });

  test('submitSignal: a model outside the token answers PERMISSION_DENIED MODEL_NOT_ALLOWED', async () => {
    const error = await rejection(
      ops.submitSignal({ signalId: signalId('perm'), modelId: 'meanrev_v1', instrument: 'SOL-USD', target: 0.1 }),
    );
    assert.equal(error.code, status.PERMISSION_DENIED);
    assert.equal(error.reason, 'MODEL_NOT_ALLOWED');
    assert.equal(error.detail?.details.model_id, 'meanrev_v1');
  });

  test('a missing strategy token answers UNAUTHENTICATED, unary and stream, without echoing tokens', async () => {
    const anonymous = new OpsClient(mesh.opsAddress);
    try {
      const unary = await rejection(anonymous.submitSignal({ signalId: signalId('anon'), modelId: 'momentum_v1', instrument: 'BTC-USD', target: 0.1 }));
      assert.equal(unary.code, status.UNAUTHENTICATED);
      assert.equal(unary.reason, 'MISSING_TOKEN');

      const stream = anonymous.streamSignals();
      const seen = collect(stream);
      await stream.send([{ signalId: signalId('anon'), modelId: 'momentum_v1', instrument: 'BTC-USD', target: 0.1 }]);
      const failure = await seen.done;
      assert.ok(failure instanceof MeshRpcError, String(failure));
      assert.equal(failure.code, status.UNAUTHENTICATED);
      assert.deepEqual(seen.decisions, []);
    } finally {
      anonymous.close();
    }
    const wrong = new OpsClient(mesh.opsAddress, { strategyToken: 'not-the-token' });
    try {
      const error = await rejection(wrong.getPositions());
      assert.equal(error.code, status.UNAUTHENTICATED);
      assert.ok(!error.message.includes('not-the-token'));
    } finally {
      wrong.close();
    }
  });

  test("the signal's traceparent is the parent of ops' span in ops' span file", async () => {
    const ctx = newSpanContext();
    const id = signalId('trace');
    const stream = ops.streamSignals();
    const seen = collect(stream);
    const [sent] = await stream.send([
      { signalId: id, modelId: 'momentum_v1', instrument: 'ETH-USD', target: 0.05, trace: { traceparent: formatTraceparent(ctx) } },
    ]);
    assert.equal(sent.trace.traceparent, formatTraceparent(ctx));
    await eventually(() => seen.decisions.find((d) => d.signalId === id), 15_000, 'decision');
    const span = await eventually(
      () => readSpans(mesh.spanFile).find((s) => s.trace_id === ctx.traceId && s.parent_span_id === ctx.spanId),
      15_000,
      `a span of trace ${ctx.traceId} with parent ${ctx.spanId} in ${mesh.spanFile}`,
    );
    assert.equal(span.service, 'ops');
    assert.equal(span.name, 'ops.signal receive');
    assert.equal(span.kind, 'CONSUMER');
    assert.equal(span.attributes['nautilus.signal_id'], id);
    // Spans further down the path (the order sent to the engine) stay in the same trace.
    await eventually(
      () => readSpans(mesh.spanFile).find((s) => s.trace_id === ctx.traceId && s.name === 'ops.order send'),
      15_000,
      'ops.order send in the same trace',
    );
    stream.end();
    await seen.done;
  });

  test("a signal whose trace is not sampled (flag 00) leaves no span in ops: the sampling decision is the client's", async () => {
    const unsampledClient = new OpsClient(mesh.opsAddress, { strategyToken: MOMENTUM_TOKEN, traceSampleRatio: 0 });
    try {
      const stream = unsampledClient.streamSignals();
      const seen = collect(stream);
      const quiet = signalId('unsampled');
      const [sent] = await stream.send([{ signalId: quiet, modelId: 'momentum_v1', instrument: 'ETH-USD', target: 0.02 }]);
      const ctx = parseTraceparent(sent.trace.traceparent);
      assert.ok(ctx !== null && !ctx.sampled, sent.trace.traceparent);
      await eventually(() => seen.decisions.find((d) => d.signalId === quiet), 15_000, 'decision');
      // A sampled signal sent after it: once its span is in the file, the earlier one would be too.
      const marker = newSpanContext();
      const loud = signalId('sampled');
      await stream.send([
        { signalId: loud, modelId: 'momentum_v1', instrument: 'ETH-USD', target: 0.03, trace: { traceparent: formatTraceparent(marker) } },
      ]);
      await eventually(() => readSpans(mesh.spanFile).find((s) => s.trace_id === marker.traceId), 15_000, 'the sampled span');
      assert.deepEqual(readSpans(mesh.spanFile).filter((s) => s.trace_id === ctx.traceId), []);
      stream.end();
      await seen.done;
    } finally {
      unsampledClient.close();
    }
  });

  test('OpsAdminClient: promote and roll back the canary, halt a model; without the token UNAUTHENTICATED', async () => {
    const noToken = new OpsAdminClient(mesh.opsAddress);
    const admin = new OpsAdminClient(mesh.opsAddress, { adminToken: ADMIN_TOKEN });
    const meanrev = new OpsClient(mesh.opsAddress, { strategyToken: MEANREV_TOKEN });
    const operator = new OpsClient(mesh.opsAddress, { adminToken: ADMIN_TOKEN });
    try {
      const refused = await rejection(noToken.promoteCanary('momentum', 'no token'));
      assert.equal(refused.code, status.UNAUTHENTICATED);

      const watcher = new OpsClient(mesh.opsAddress, { strategyToken: MOMENTUM_TOKEN });
      const events: MeshEvent[] = [];
      const watching = (async () => {
        for await (const frame of watcher.watchEvents(['CANARY'], true)) events.push(...frame);
      })();

      const [before] = await ops.getCanaryStatus('momentum');
      assert.equal(before.state, 'CANARY_STATE_SHADOW');

      const promoted = await admin.promoteCanary('momentum', 'node client test');
      assert.equal(promoted.state, 'CANARY_STATE_STEPPING');
      assert.equal(promoted.stepPercent, 5);
      const [stepping] = await ops.getCanaryStatus('momentum');
      assert.ok(Math.abs((stepping.weights.momentum_v2 ?? 0) - 0.05) < 1e-9, JSON.stringify(stepping.weights));

      const event = await eventually(() => events.find((e) => e.attributes.to_state === 'STEPPING'), 10_000, 'CANARY event');
      assert.deepEqual(
        [event.attributes.from_state, event.attributes.step_percent, event.attributes.model_id],
        ['SHADOW', '5.0', 'momentum_v2'],
      );
      watcher.close();
      await watching; // close() ends the stream: the loop returns, it does not throw

      const rolledBack = await admin.rollbackCanary('momentum', 'node client test');
      assert.equal(rolledBack.state, 'CANARY_STATE_ROLLED_BACK');
      assert.equal(rolledBack.weights.momentum_v1, 1);

      const blank = await rejection(admin.pauseCanary('momentum', ' '));
      assert.equal(blank.code, status.INVALID_ARGUMENT);
      assert.equal(blank.reason, 'REASON_REQUIRED');

      const halted = await admin.setTradingState('meanrev_v1', 'TRADING_STATE_HALTED', 'node client test');
      assert.equal(halted.modelState, 'TRADING_STATE_HALTED');
      const state = await meanrev.getTradingState();
      assert.equal(state.models.meanrev_v1, 'TRADING_STATE_HALTED');
      const momentumView = await ops.getTradingState(); // a strategy token reads its own models only
      assert.equal(momentumView.models.meanrev_v1, undefined);
      const denied = await rejection(
        meanrev.submitSignal({ signalId: signalId('halted'), modelId: 'meanrev_v1', instrument: 'SOL-USD', target: 0.2 }),
      );
      assert.equal(denied.code, status.FAILED_PRECONDITION);
      assert.equal(denied.reason, 'TRADING_HALTED');
      assert.equal(denied.detail?.kind, 'risk_rejected');
      await admin.setTradingState('meanrev_v1', 'TRADING_STATE_ACTIVE', 'node client test');

      const allocations = await operator.getAllocations(); // the admin token reads every strategy
      const total = allocations.allocations.reduce((sum, a) => sum + a.fraction, 0);
      assert.ok(Math.abs(total - 1) < 0.002, JSON.stringify(allocations));
    } finally {
      noToken.close();
      admin.close();
      meanrev.close();
      operator.close();
    }
  });

  test('examples/momentum.js trades the mesh: quotes in, signals out, every one decided, fills back', async () => {
    const { code, stdout, stderr } = await momentumExample(MOMENTUM_TOKEN, 4);
    assert.equal(code, 0, stderr);
    const line = /^momentum: signals=(\d+) accepted=(\d+) rejected=(\d+) no_action=(\d+) fills=(\d+)/m.exec(stdout);
    assert.ok(line !== null, stdout);
    const [signals, accepted, rejected, noAction, fills] = line.slice(1).map(Number);
    assert.ok(signals >= 4, stdout); // the first target of each (model, instrument) is always sent
    assert.equal(accepted + rejected + noAction, signals, stdout);
    assert.ok(accepted > 0 && fills > 0, stdout);
  });

  test('examples/momentum.js with a wrong token exits 1 with UNAUTHENTICATED, not echoing the token', async () => {
    const { code, stdout, stderr } = await momentumExample('not-the-token', 10);
    assert.equal(code, 1, stdout);
    assert.match(stderr, /^error: UNAUTHENTICATED: INVALID_TOKEN/);
    assert.ok(!stderr.includes('not-the-token'));
  });
});
