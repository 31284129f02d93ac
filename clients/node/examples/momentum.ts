/**
 * The momentum strategy of `strategies/momentum.py`, written against the Node client: EMA crosses on the
 * engine's quotes, proportional targets streamed to ops in frames, decisions and fills read back.
 *
 *   node dist/examples/momentum.js [--ops 127.0.0.1:50051] [--engine 127.0.0.1:50052]
 *                                  [--token demo-momentum-token] [--duration 30]
 *
 * Like the Python runtime, each model spreads its quota evenly over its instruments, the first target of
 * a (model, instrument) is always sent, later ones only when they move by `minTargetChange`, and an
 * unchanged target is re-sent every `refreshSeconds` so allocation and canary changes reach positions.
 * Prints one `momentum:` line at the end (signals, accepted, rejected, fills).
 */
import { randomBytes } from 'node:crypto';

import { type Fill, MarketDataClient, OpsClient, type Quote, type SignalInput } from '../src';

/** Parameters of the EMA-cross model (defaults as in strategies/momentum.py). */
export interface MomentumConfig {
  /** Span of the fast EMA in quotes. */
  fast: number;
  /** Span of the slow EMA in quotes; also the warm-up length. */
  slow: number;
  /** Target per unit of relative EMA spread. */
  scale: number;
}

/** EMA-cross momentum, one pair of EMAs per instrument; null while warming up. */
export class MomentumModel {
  private readonly alphaFast: number;
  private readonly alphaSlow: number;
  private readonly state = new Map<string, { fast: number; slow: number; count: number }>();

  constructor(readonly config: MomentumConfig = { fast: 10, slow: 30, scale: 5000 }) {
    if (config.fast < 1 || config.slow <= config.fast || !(config.scale > 0)) {
      throw new Error(`bad momentum config ${JSON.stringify(config)}`);
    }
    this.alphaFast = 2 / (config.fast + 1);
    this.alphaSlow = 2 / (config.slow + 1);
  }

  /** Feeds one mid price; returns the target exposure in [-1, 1], or null while warming up. */
  onPrice(instrument: string, mid: number): number | null {
    const s = this.state.get(instrument);
    if (s === undefined) {
      this.state.set(instrument, { fast: mid, slow: mid, count: 1 });
      return null;
    }
    s.fast += this.alphaFast * (mid - s.fast);
    s.slow += this.alphaSlow * (mid - s.slow);
    s.count += 1;
    if (s.count < this.config.slow || s.slow <= 0) return null;
    return Math.max(-1, Math.min(1, (this.config.scale * (s.fast - s.slow)) / s.slow));
  }
}

/** One model of the strategy: id, model, instruments. */
export interface ModelSpec {
  modelId: string;
  model: MomentumModel;
  instruments: string[];
}

/** Decides which targets are worth a signal (no I/O), as strategies/runtime.py's SignalPlanner. */
export class SignalPlanner {
  private readonly lastSent = new Map<string, number>();
  private readonly lastSentAt = new Map<string, number>();
  private readonly lastTs = new Map<string, bigint>();
  private readonly counters = new Map<string, number>();

  constructor(
    private readonly models: ModelSpec[],
    private readonly minTargetChange: number,
    private readonly refreshMs: number,
    private readonly runId: string,
  ) {}

  get instruments(): string[] {
    return [...new Set(this.models.flatMap((m) => m.instruments))].sort();
  }

  plan(quotes: Quote[], nowMs: number): SignalInput[] {
    const latest = new Map<string, { modelId: string; instrument: string; target: number }>();
    for (const quote of quotes) {
      const mid = Number.parseFloat(quote.mid);
      const ts = BigInt(quote.tsUnixNanos || '0');
      if (!(Number.isFinite(mid) && mid > 0)) continue;
      if (ts > 0n && ts <= (this.lastTs.get(quote.instrument) ?? 0n)) continue; // the same quote again
      if (ts > 0n) this.lastTs.set(quote.instrument, ts);
      for (const spec of this.models) {
        if (!spec.instruments.includes(quote.instrument)) continue;
        const target = spec.model.onPrice(quote.instrument, mid);
        if (target === null || !Number.isFinite(target)) continue;
        const share = 1 / Math.max(1, spec.instruments.length);
        latest.set(`${spec.modelId}|${quote.instrument}`, { modelId: spec.modelId, instrument: quote.instrument, target: target * share });
      }
    }
    const signals: SignalInput[] = [];
    for (const [key, { modelId, instrument, target }] of latest) {
      const previous = this.lastSent.get(key);
      const smallMove = previous !== undefined && Math.abs(target - previous) < this.minTargetChange - 1e-12;
      const stale = this.refreshMs > 0 && nowMs - (this.lastSentAt.get(key) ?? nowMs) >= this.refreshMs;
      if (smallMove && !stale) continue;
      this.lastSent.set(key, target);
      this.lastSentAt.set(key, nowMs);
      const n = (this.counters.get(modelId) ?? 0) + 1;
      this.counters.set(modelId, n);
      signals.push({ signalId: `${this.runId}-${modelId}-${instrument}-${n}`, modelId, instrument, target, confidence: 1 });
    }
    return signals;
  }
}

export interface MomentumOptions {
  ops: string;
  engine: string;
  token: string;
  /** Seconds to trade; then the quote stream stops and the strategy waits for outstanding fills. */
  durationSeconds: number;
  minTargetChange?: number;
  refreshSeconds?: number;
  models?: ModelSpec[];
  /** Called with every fill (for the caller's own bookkeeping). */
  onFill?: (fill: Fill) => void;
}

export interface MomentumStats {
  signals: number;
  accepted: number;
  rejected: number;
  noAction: number;
  fills: number;
  /** Rejection codes and how often each came. */
  rejections: Record<string, number>;
}

/** The demo's momentum models (config/demo/strategies.json). */
export function demoModels(): ModelSpec[] {
  const instruments = ['BTC-USD', 'ETH-USD'];
  return [
    { modelId: 'momentum_v1', model: new MomentumModel({ fast: 10, slow: 30, scale: 20000 }), instruments },
    { modelId: 'momentum_v2', model: new MomentumModel({ fast: 6, slow: 24, scale: 20000 }), instruments },
  ];
}

/** Trades for `durationSeconds`, then drains: waits (up to 5 s) for the fills of accepted orders. */
export async function runMomentum(options: MomentumOptions): Promise<MomentumStats> {
  const planner = new SignalPlanner(
    options.models ?? demoModels(),
    options.minTargetChange ?? 0.15,
    (options.refreshSeconds ?? 5) * 1000,
    `node-momentum-${randomBytes(4).toString('hex')}`,
  );
  const ops = new OpsClient(options.ops, { strategyToken: options.token });
  const market = new MarketDataClient(options.engine);
  const stats: MomentumStats = { signals: 0, accepted: 0, rejected: 0, noAction: 0, fills: 0, rejections: {} };
  const ordered = new Map<string, number>(); // client_order_id -> quantity still to fill
  const stream = ops.streamSignals();

  let streamError: unknown;
  const reading = (async () => {
    for await (const frame of stream) {
      for (const d of frame.decisions) {
        if (d.status === 'DECISION_STATUS_ACCEPTED') {
          stats.accepted += 1;
          ordered.set(d.clientOrderId, Number.parseFloat(d.quantity));
        } else if (d.status === 'DECISION_STATUS_REJECTED') {
          stats.rejected += 1;
          const code = d.error?.code || 'UNKNOWN';
          stats.rejections[code] = (stats.rejections[code] ?? 0) + 1;
        } else if (d.status === 'DECISION_STATUS_NO_ACTION') {
          stats.noAction += 1;
        }
      }
      for (const fill of frame.fills) {
        stats.fills += 1;
        const left = (ordered.get(fill.clientOrderId) ?? 0) - Number.parseFloat(fill.quantity);
        if (left > 1e-12) ordered.set(fill.clientOrderId, left);
        else ordered.delete(fill.clientOrderId);
        options.onFill?.(fill);
      }
    }
  })().catch((error: unknown) => {
    // The stream failed (e.g. UNAUTHENTICATED): stop reading quotes and report it.
    streamError = error;
    market.stopStreams();
  });

  const stopAt = Date.now() + options.durationSeconds * 1000;
  const timer = setTimeout(() => market.stopStreams(), options.durationSeconds * 1000);
  try {
    for await (const quotes of market.streamQuotes(planner.instruments)) {
      const signals = planner.plan(quotes, Date.now());
      if (signals.length > 0) {
        await stream.send(signals);
        stats.signals += signals.length;
      }
      if (Date.now() >= stopAt) break;
    }
    const drainUntil = Date.now() + 5000;
    while ((ordered.size > 0 || stats.accepted + stats.rejected + stats.noAction < stats.signals) && Date.now() < drainUntil) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    clearTimeout(timer);
    stream.end();
    await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 2000))]);
    stream.cancel(); // ops did not end the stream within 2 s of the half-close
    await reading;
    market.close();
    ops.close();
  }
  if (streamError !== undefined) throw streamError;
  return stats;
}

function argument(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

if (require.main === module) {
  runMomentum({
    ops: argument('ops', '127.0.0.1:50051'),
    engine: argument('engine', '127.0.0.1:50052'),
    token: argument('token', process.env.NAUTILUS_STRATEGY_TOKEN ?? 'demo-momentum-token'),
    durationSeconds: Number.parseFloat(argument('duration', '30')),
  }).then(
    (s) => {
      const codes = Object.entries(s.rejections).map(([code, n]) => `${code}=${n}`).join(',');
      console.log(
        `momentum: signals=${s.signals} accepted=${s.accepted} rejected=${s.rejected} no_action=${s.noAction} fills=${s.fills}` +
          (codes ? ` rejections=${codes}` : ''),
      );
    },
    (error: unknown) => {
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
      process.exitCode = 1;
    },
  );
}
