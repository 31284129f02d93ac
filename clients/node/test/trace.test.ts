/** W3C traceparent helpers and signal preparation (no network). */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import { formatTraceparent, newSpanContext, parseTraceparent, prepareSignal } from '../src';

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
