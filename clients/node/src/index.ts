/**
 * nautilus-mesh client for Node: OpsClient (strategies), OpsAdminClient (operators), MarketDataClient
 * (engine quotes), MeshRpcError (decoded google.rpc.Status details) and W3C trace-context helpers.
 */
export { OpsAdminClient, type OpsAdminClientOptions } from './admin-client';
export { ADMIN_TOKEN_HEADER, DEFAULT_TIMEOUT_MS, type MeshClientOptions, STRATEGY_TOKEN_HEADER } from './call';
export {
  decodeRichStatus,
  type FieldViolation,
  MeshRpcError,
  type QuotaViolation,
  type RichStatus,
  STATUS_DETAILS_KEY,
  toMeshError,
} from './errors';
export { MarketDataClient } from './market-data';
export {
  MAX_SIGNALS_PER_FRAME,
  OpsClient,
  type OpsClientOptions,
  prepareSignal,
  type SentSignal,
  type SignalInput,
  SignalStream,
  type StreamSignalsOptions,
} from './ops-client';
export { defaultProtoDir, LOADER_OPTIONS, loadMeshProto } from './protos';
export {
  formatTraceparent,
  newRootSpanContext,
  newSpanContext,
  parseTraceparent,
  sampledByRatio,
  sampleRatioFromEnv,
  type SpanContext,
} from './trace';
export type { Event__Output as MeshEvent } from './gen/nautilus/ops/v1/Event';
export type { Fill__Output as Fill } from './gen/nautilus/ops/v1/Fill';
export type { Position__Output as Position } from './gen/nautilus/ops/v1/Position';
export type { SignalDecision__Output as SignalDecision } from './gen/nautilus/ops/v1/SignalDecision';
export type { CanaryStatus__Output as CanaryStatus } from './gen/nautilus/ops/v1/CanaryStatus';
export type { Quote__Output as Quote } from './gen/nautilus/common/v1/Quote';
