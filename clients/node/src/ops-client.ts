/**
 * `OpsClient`: a strategy's view of `nautilus.ops.v1.OpsService`, authenticated by `x-strategy-token`.
 *
 * Signals stream in frames (`streamSignals()`); decisions and fills come back on the same stream.
 * Every signal sent by this client carries a W3C `traceparent` in its `TraceContext` (a new sampled
 * trace unless the caller set one), so ops' `ops.signal receive` span is its child.
 */
import type * as grpc from '@grpc/grpc-js';

import { ADMIN_TOKEN_HEADER, MeshClient, type MeshClientOptions, STRATEGY_TOKEN_HEADER } from './call';
import { toMeshError } from './errors';
import type { TraceContext } from './gen/nautilus/common/v1/TraceContext';
import type { Event__Output } from './gen/nautilus/ops/v1/Event';
import type { GetAllocationsResponse__Output } from './gen/nautilus/ops/v1/GetAllocationsResponse';
import type { GetCanaryStatusResponse__Output } from './gen/nautilus/ops/v1/GetCanaryStatusResponse';
import type { GetModelQuotaResponse__Output } from './gen/nautilus/ops/v1/GetModelQuotaResponse';
import type { GetModelStatsResponse__Output } from './gen/nautilus/ops/v1/GetModelStatsResponse';
import type { GetPositionsResponse__Output } from './gen/nautilus/ops/v1/GetPositionsResponse';
import type { GetStreamLimitsResponse__Output } from './gen/nautilus/ops/v1/GetStreamLimitsResponse';
import type { GetTradingStateResponse__Output } from './gen/nautilus/ops/v1/GetTradingStateResponse';
import type { CanaryStatus__Output } from './gen/nautilus/ops/v1/CanaryStatus';
import type { ListFillsResponse__Output } from './gen/nautilus/ops/v1/ListFillsResponse';
import type { ListOrdersResponse__Output } from './gen/nautilus/ops/v1/ListOrdersResponse';
import type { ListModelsResponse__Output } from './gen/nautilus/ops/v1/ListModelsResponse';
import type { ModelInfo__Output } from './gen/nautilus/ops/v1/ModelInfo';
import type { OpsServiceClient } from './gen/nautilus/ops/v1/OpsService';
import type { Position__Output } from './gen/nautilus/ops/v1/Position';
import type { Signal } from './gen/nautilus/ops/v1/Signal';
import type { SignalDecision__Output } from './gen/nautilus/ops/v1/SignalDecision';
import type { SubmitSignalResponse__Output } from './gen/nautilus/ops/v1/SubmitSignalResponse';
import type { StreamSignalsRequest } from './gen/nautilus/ops/v1/StreamSignalsRequest';
import type { StreamSignalsResponse__Output } from './gen/nautilus/ops/v1/StreamSignalsResponse';
import { formatTraceparent, newRootSpanContext, sampleRatioFromEnv } from './trace';

/** A signal as the caller writes it: ids, target and (optionally) its own trace context. */
export interface SignalInput {
  /** Unique per model; a repeat is answered DUPLICATE with the earlier decision. */
  signalId: string;
  modelId: string;
  instrument: string;
  /** Target exposure as a fraction of the model's quota, in [-1, 1]. */
  target: number;
  /** Model confidence in [0, 1] (informational). */
  confidence?: number;
  /** Set to continue an existing trace; by default each signal starts a new sampled trace. */
  trace?: TraceContext;
  /** Default: now. */
  createdAtUnixNanos?: string;
}

/** A signal as it went on the wire: its trace context is always set. */
export type SentSignal = Signal & { trace: { traceparent: string; tracestate: string } };

/**
 * Fills in the trace context and creation time of a signal. A signal without a traceparent starts a new
 * trace, sampled with probability `sampleRatio` (flag 01 or 00; ops' parent-based sampler follows it).
 */
export function prepareSignal(input: SignalInput, sampleRatio = 1): SentSignal {
  const traceparent = input.trace?.traceparent || formatTraceparent(newRootSpanContext(sampleRatio));
  return {
    signalId: input.signalId,
    modelId: input.modelId,
    instrument: input.instrument,
    target: input.target,
    confidence: input.confidence ?? 0,
    createdAtUnixNanos: input.createdAtUnixNanos ?? (BigInt(Date.now()) * 1_000_000n).toString(),
    trace: { traceparent, tracestate: input.trace?.tracestate ?? '' },
  };
}

/** Options of an OpsClient. */
export interface OpsClientOptions extends MeshClientOptions {
  /** Sent as `x-strategy-token`; every OpsService call needs one (UNAUTHENTICATED without); it reads its own models only. */
  strategyToken?: string;
  /** Sent as `x-ops-token` when given: the read calls then see every model and strategy (an operator's view). */
  adminToken?: string;
  /**
   * Share of new traces sampled, in [0, 1], decided here per signal (OpenTelemetry's trace-id ratio rule).
   * Default: from `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, else 1 (every signal traced).
   */
  traceSampleRatio?: number;
}

/** Signals in one request frame at most, unless ops says fewer (`getStreamLimits`): ops' default frame limit. */
export const MAX_SIGNALS_PER_FRAME = 1000;

/** Options of a `StreamSignals` call. */
export interface StreamSignalsOptions {
  /**
   * Resume fills missed while no stream was open: ops sends once, first, every fill of the stream's models with a
   * higher seq that it holds in memory. Give the seq of the last fill seen (a `Fill.seq`), or `0` to ask for every fill
   * ops holds (e.g. the newest seq of `listFills` when the strategy started, before its first fill).
   */
  resumeAfterFillSeq?: number | string | bigint;
  /** Signals per frame at most; a larger `send` is split (default MAX_SIGNALS_PER_FRAME; see `getStreamLimits`). */
  maxSignalsPerFrame?: number;
}

/**
 * One `StreamSignals` call: send frames of signals, iterate frames of decisions and fills.
 *
 * A bad signal is answered in-band (a REJECTED decision with an ErrorDetail) and the stream stays open;
 * a failure of the stream itself (e.g. UNAUTHENTICATED) is thrown by the iteration as a MeshRpcError (a `send` on a
 * refused stream still resolves: the refusal comes with the first read).
 */
export class SignalStream implements AsyncIterable<StreamSignalsResponse__Output> {
  private cancelled = false;
  private readonly frameLimit: number;

  constructor(
    private readonly call: grpc.ClientDuplexStream<StreamSignalsRequest, StreamSignalsResponse__Output>,
    private readonly protoDir: string,
    private readonly sampleRatio = 1,
    options: StreamSignalsOptions = {},
  ) {
    this.frameLimit = Math.max(1, Math.floor(options.maxSignalsPerFrame ?? MAX_SIGNALS_PER_FRAME));
    if (options.resumeAfterFillSeq !== undefined) {
      // The stream's first frame: the only one ops reads a resume request from. resumeFills: 0 resumes too.
      this.call.write({ resumeAfterFillSeq: String(options.resumeAfterFillSeq), resumeFills: true });
    }
  }

  /**
   * Sends the signals, in frames of at most the stream's frame limit (a larger frame would be refused whole with
   * FRAME_TOO_LARGE); waits when the transport's buffer is full. Returns the signals as sent.
   */
  async send(signals: SignalInput[]): Promise<SentSignal[]> {
    const sent = signals.map((signal) => prepareSignal(signal, this.sampleRatio));
    const frames: SentSignal[][] = [];
    for (let start = 0; start < sent.length; start += this.frameLimit) frames.push(sent.slice(start, start + this.frameLimit));
    for (const frame of frames.length > 0 ? frames : [[]]) {
      if (!this.call.write({ signals: frame })) {
        await new Promise<void>((resolve) => this.call.once('drain', resolve));
      }
    }
    return sent;
  }

  /** Half-closes: no more signals; decisions and fills still arrive until ops ends the stream. */
  end(): void {
    this.call.end();
  }

  /** Cancels the call; the iteration then ends (without an error). */
  cancel(): void {
    this.cancelled = true;
    this.call.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamSignalsResponse__Output> {
    try {
      for await (const frame of this.call) {
        yield frame as StreamSignalsResponse__Output;
      }
    } catch (error) {
      if (!this.cancelled) throw toMeshError(error, this.protoDir);
    }
  }
}

/** A strategy's client of OpsService. */
export class OpsClient extends MeshClient<OpsServiceClient> {
  /** Share of new traces sampled (see OpsClientOptions.traceSampleRatio). */
  readonly traceSampleRatio: number;

  constructor(address: string, options: OpsClientOptions = {}) {
    super(address, (proto) => proto.nautilus.ops.v1.OpsService, { [STRATEGY_TOKEN_HEADER]: options.strategyToken, [ADMIN_TOKEN_HEADER]: options.adminToken }, options);
    this.traceSampleRatio = options.traceSampleRatio ?? sampleRatioFromEnv();
  }

  /** Opens a `StreamSignals` call (`options`: resume fills missed while no stream was open, the frame limit). */
  streamSignals(options: StreamSignalsOptions = {}): SignalStream {
    return new SignalStream(this.stub.streamSignals(this.metadata()), this.protoDir, this.traceSampleRatio, options);
  }

  /** The most signals ops accepts in one frame (a larger frame is refused whole, FRAME_TOO_LARGE). */
  async getStreamLimits(): Promise<GetStreamLimitsResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.getStreamLimits({}, md, opts, cb));
  }

  /** One signal, one decision; errors are MeshRpcError with the decoded details. */
  async submitSignal(signal: SignalInput): Promise<SignalDecision__Output> {
    const request = { signal: prepareSignal(signal, this.traceSampleRatio) };
    const response = await this.unary<SubmitSignalResponse__Output>((md, opts, cb) => this.stub.submitSignal(request, md, opts, cb));
    if (response.decision === null) throw new Error('SubmitSignal answered without a decision');
    return response.decision;
  }

  /** Positions of one model, or of all models the mesh knows. */
  async getPositions(modelId = ''): Promise<Position__Output[]> {
    const response = await this.unary<GetPositionsResponse__Output>((md, opts, cb) => this.stub.getPositions({ modelId }, md, opts, cb));
    return response.positions;
  }

  async listModels(strategyId = ''): Promise<ModelInfo__Output[]> {
    const response = await this.unary<ListModelsResponse__Output>((md, opts, cb) => this.stub.listModels({ strategyId }, md, opts, cb));
    return response.models;
  }

  getAllocations(): Promise<GetAllocationsResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.getAllocations({}, md, opts, cb));
  }

  getModelQuota(modelId: string): Promise<GetModelQuotaResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.getModelQuota({ modelId }, md, opts, cb));
  }

  getModelStats(modelId = ''): Promise<GetModelStatsResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.getModelStats({ modelId }, md, opts, cb));
  }

  listOrders(modelId = '', pageSize = 0, pageToken = ''): Promise<ListOrdersResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.listOrders({ modelId, pageSize, pageToken }, md, opts, cb));
  }

  listFills(modelId = '', pageSize = 0, pageToken = ''): Promise<ListFillsResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.listFills({ modelId, pageSize, pageToken }, md, opts, cb));
  }

  /** Canary state of each strategy that has a canary (or only `strategyId`'s). */
  async getCanaryStatus(strategyId = ''): Promise<CanaryStatus__Output[]> {
    const response = await this.unary<GetCanaryStatusResponse__Output>((md, opts, cb) => this.stub.getCanaryStatus({ strategyId }, md, opts, cb));
    return response.canaries;
  }

  /**
   * Ops events (allocations, weight changes, risk, canary) as frames, from now on (with `includeRecent`,
   * the recent ones kept in memory first), of `kinds` only when given. Ends when the loop breaks or on close().
   */
  async *watchEvents(kinds: string[] = [], includeRecent = false): AsyncGenerator<Event__Output[]> {
    for await (const frame of this.serverStream(this.stub.watchEvents({ kinds, includeRecent }, this.metadata()))) {
      yield frame.events;
    }
  }

  getTradingState(): Promise<GetTradingStateResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.getTradingState({}, md, opts, cb));
  }
}
