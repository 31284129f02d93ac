/**
 * W3C trace context (https://www.w3.org/TR/trace-context/) for the `TraceContext` field every signal
 * carries. gRPC metadata is sent once per stream, so per-signal context travels inside the message;
 * ops opens its `ops.signal receive` span as a child of the span named here.
 */
import { randomBytes } from 'node:crypto';

/** The parts of a `traceparent` header. */
export interface SpanContext {
  /** 32 lowercase hex digits. */
  traceId: string;
  /** 16 lowercase hex digits: the span the receiver's span becomes a child of. */
  spanId: string;
  /** Whether the trace is sampled (flag 01); ops' parent-based sampler follows it. */
  sampled: boolean;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function nonZeroHex(bytes: number): string {
  for (;;) {
    const hex = randomBytes(bytes).toString('hex');
    if (!/^0+$/.test(hex)) return hex;
  }
}

/** A new span context: a fresh span id in `traceId` (a new trace when none is given). */
export function newSpanContext(traceId?: string, sampled = true): SpanContext {
  return { traceId: traceId ?? nonZeroHex(16), spanId: nonZeroHex(8), sampled };
}

/** The `traceparent` header value of a span context. */
export function formatTraceparent(ctx: SpanContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.sampled ? '01' : '00'}`;
}

/** The span context in a `traceparent` value, or null when it is not a valid version-00 header. */
export function parseTraceparent(value: string): SpanContext | null {
  const match = TRACEPARENT.exec(value.trim());
  if (match === null) return null;
  const [, traceId, spanId, flags] = match;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

const TRACE_ID_LIMIT = (1n << 64n) - 1n;

/**
 * OpenTelemetry's `TraceIdRatioBased` decision: sampled when the trace id's low 64 bits fall below
 * `ratio` x 2^64, so every service deciding on the same trace id with the same ratio agrees.
 */
export function sampledByRatio(traceId: string, ratio: number): boolean {
  if (!(ratio > 0)) return false;
  if (ratio >= 1) return true;
  const bound = BigInt(Math.round(ratio * 2 ** 64));
  return (BigInt(`0x${traceId}`) & TRACE_ID_LIMIT) < bound;
}

/**
 * The sampling ratio the standard variables ask for, as the Python services read them:
 * `OTEL_TRACES_SAMPLER` = `always_off`/`parentbased_always_off` -> 0, `traceidratio`/`parentbased_traceidratio`
 * -> `OTEL_TRACES_SAMPLER_ARG` (default 1), anything else -> 1.
 */
export function sampleRatioFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const sampler = (env.OTEL_TRACES_SAMPLER ?? '').trim().toLowerCase();
  if (sampler === 'always_off' || sampler === 'parentbased_always_off') return 0;
  if (sampler === 'traceidratio' || sampler === 'parentbased_traceidratio') {
    const ratio = Number.parseFloat(env.OTEL_TRACES_SAMPLER_ARG ?? '1');
    return Number.isFinite(ratio) ? Math.min(1, Math.max(0, ratio)) : 1;
  }
  return 1;
}

/** A new root span context whose sampled flag follows `ratio` (the decision made at the strategy). */
export function newRootSpanContext(ratio: number): SpanContext {
  const ctx = newSpanContext();
  return { ...ctx, sampled: sampledByRatio(ctx.traceId, ratio) };
}
