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
