/** W3C traceparent helpers, the sampling decision and signal preparation (no network). */
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';

import {
  formatTraceparent,
  newSpanContext,
  parseTraceparent,
  prepareSignal,
  sampledByRatio,
  sampleRatioFromEnv,
} from '../src';
import { PYTHON } from './mesh';

test('newSpanContext: 32 and 16 lowercase hex digits, round-trips through a traceparent', () => {
  const ctx = newSpanContext();
  assert.match(ctx.traceId, /^[0-9a-f]{32}$/);
  assert.match(ctx.spanId, /^[0-9a-f]{16}$/);
  assert.deepEqual(parseTraceparent(formatTraceparent(ctx)), ctx);
  assert.equal(formatTraceparent(ctx), `00-${ctx.traceId}-${ctx.spanId}-01`);
});

test('newSpanContext with a trace id: same trace, new span', () => {
  const parent = newSpanContext();
  const child = newSpanContext(parent.traceId);
  assert.equal(child.traceId, parent.traceId);
  assert.notEqual(child.spanId, parent.spanId);
});

test('parseTraceparent: invalid headers (all-zero ids, wrong version or length, upper case) give null', () => {
  const trace = 'a'.repeat(32);
  const span = 'b'.repeat(16);
  assert.deepEqual(parseTraceparent(`00-${trace}-${span}-00`), { traceId: trace, spanId: span, sampled: false });
  for (const bad of [
    `00-${'0'.repeat(32)}-${span}-01`,
    `00-${trace}-${'0'.repeat(16)}-01`,
    `01-${trace}-${span}-01`,
    `00-${trace.slice(1)}-${span}-01`,
    `00-${trace.toUpperCase()}-${span}-01`,
    '',
  ]) {
    assert.equal(parseTraceparent(bad), null, bad);
  }
});

test('prepareSignal: a new sampled traceparent per signal unless the caller gives one', () => {
  const base = { signalId: 's', modelId: 'm', instrument: 'BTC-USD', target: 0.1 };
  const a = parseTraceparent(prepareSignal(base).trace.traceparent);
  const b = parseTraceparent(prepareSignal(base).trace.traceparent);
  assert.ok(a !== null && b !== null && a.sampled);
  assert.notEqual(a.traceId, b.traceId);
  const given = formatTraceparent(newSpanContext());
  assert.equal(prepareSignal({ ...base, trace: { traceparent: given, tracestate: 'k=v' } }).trace.traceparent, given);
  assert.match(String(prepareSignal(base).createdAtUnixNanos), /^\d{19}$/);
});

test('sampledByRatio: 0 samples nothing, 1 everything, and the decision rests on the low 64 bits', () => {
  const id = newSpanContext().traceId;
  assert.equal(sampledByRatio(id, 0), false);
  assert.equal(sampledByRatio(id, 1), true);
  assert.equal(sampledByRatio(`${'f'.repeat(16)}${'0'.repeat(15)}1`, 0.01), true);
  assert.equal(sampledByRatio(`${'0'.repeat(16)}${'f'.repeat(16)}`, 0.99), false);
});

test("sampledByRatio decides as OpenTelemetry Python's TraceIdRatioBased on the same trace ids", () => {
  const ids = Array.from({ length: 300 }, () => newSpanContext().traceId);
  const ratio = 0.3;
  const program = [
    'import sys',
    'from opentelemetry.sdk.trace.sampling import TraceIdRatioBased',
    `s = TraceIdRatioBased(${ratio})`,
    "print(''.join('1' if s.should_sample(None, int(t, 16), 'x').decision.is_sampled() else '0' for t in sys.argv[1:]))",
  ].join('\n');
  const python = execFileSync(PYTHON, ['-c', program, ...ids], { encoding: 'utf-8' }).trim();
  const node = ids.map((id) => (sampledByRatio(id, ratio) ? '1' : '0')).join('');
  assert.equal(node, python);
  const share = [...node].filter((c) => c === '1').length / ids.length;
  assert.ok(share > 0.15 && share < 0.45, `share ${share}`);
});

test('sampleRatioFromEnv reads the standard OTEL_TRACES_SAMPLER variables', () => {
  assert.equal(sampleRatioFromEnv({}), 1);
  assert.equal(sampleRatioFromEnv({ OTEL_TRACES_SAMPLER: 'always_on' }), 1);
  assert.equal(sampleRatioFromEnv({ OTEL_TRACES_SAMPLER: 'always_off' }), 0);
  assert.equal(sampleRatioFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.01' }), 0.01);
  assert.equal(sampleRatioFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: 'x' }), 1);
  assert.equal(sampleRatioFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '7' }), 1);
});

test('prepareSignal with ratio 0: flag 00 (not sampled)', () => {
  const sent = prepareSignal({ signalId: 's', modelId: 'm', instrument: 'BTC-USD', target: 0 }, 0);
  assert.equal(parseTraceparent(sent.trace.traceparent)?.sampled, false);
});
