/**
 * One error class for every failed call, decoded once at the boundary.
 *
 * Unary RPCs of the mesh fail with a gRPC status whose trailer `grpc-status-details-bin` holds a
 * `google.rpc.Status`; its details carry an `ErrorInfo` (reason = the mesh's stable code, e.g.
 * `OUT_OF_RANGE`, `INVALID_QUOTE`), a `BadRequest` with field violations for validation errors, a
 * `QuotaFailure` for quota denials and our `nautilus.common.v1.ErrorDetail` (kind, code, message,
 * details, field). `MeshRpcError` exposes them as typed fields; details of other types are kept as
 * their type names in `otherDetails`.
 */
import * as grpc from '@grpc/grpc-js';
import type * as protobuf from 'protobufjs';

import type { BadRequest__Output } from './gen/google/rpc/BadRequest';
import type { ErrorInfo__Output } from './gen/google/rpc/ErrorInfo';
import type { QuotaFailure__Output } from './gen/google/rpc/QuotaFailure';
import type { ErrorDetail__Output } from './gen/nautilus/common/v1/ErrorDetail';
import { LOADER_OPTIONS, loadErrorRoot } from './protos';

export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';

/** One `google.rpc.BadRequest.FieldViolation`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** One `google.rpc.QuotaFailure.Violation`. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** The decoded rich status of a failed call. */
export interface RichStatus {
  errorInfo: ErrorInfo__Output | null;
  fieldViolations: FieldViolation[];
  quotaViolations: QuotaViolation[];
  detail: ErrorDetail__Output | null;
  otherDetails: string[];
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: LOADER_OPTIONS.longs,
  enums: LOADER_OPTIONS.enums,
  defaults: LOADER_OPTIONS.defaults,
  oneofs: LOADER_OPTIONS.oneofs,
};

// protobufjs's bundled google/protobuf/any.proto keeps the proto field name (`type_url`).
interface AnyMessage {
  type_url?: string;
  typeUrl?: string;
  value: Uint8Array;
}

/** Decodes a serialized `google.rpc.Status` into its typed details. */
export function decodeRichStatus(bytes: Uint8Array, protoDir?: string): RichStatus {
  const root = loadErrorRoot(protoDir);
  const status = root.lookupType('google.rpc.Status').decode(bytes) as unknown as { details: AnyMessage[] };
  const out: RichStatus = { errorInfo: null, fieldViolations: [], quotaViolations: [], detail: null, otherDetails: [] };
  for (const any of status.details ?? []) {
    const typeUrl = any.type_url ?? any.typeUrl ?? '';
    const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
    const type = root.lookup(typeName);
    if (type === null || !('decode' in type)) {
      out.otherDetails.push(typeName);
      continue;
    }
    const messageType = type as protobuf.Type;
    const value = messageType.toObject(messageType.decode(any.value), TO_OBJECT);
    switch (typeName) {
      case 'google.rpc.ErrorInfo':
        out.errorInfo = value as ErrorInfo__Output;
        break;
      case 'google.rpc.BadRequest':
        for (const v of (value as BadRequest__Output).fieldViolations) {
          out.fieldViolations.push({ field: v.field, description: v.description });
        }
        break;
      case 'google.rpc.QuotaFailure':
        for (const v of (value as QuotaFailure__Output).violations) {
          out.quotaViolations.push({ subject: v.subject, description: v.description });
        }
        break;
      case 'nautilus.common.v1.ErrorDetail':
        out.detail = value as ErrorDetail__Output;
        break;
      default:
        out.otherDetails.push(typeName);
    }
  }
  return out;
}

/**
 * A failed mesh call: the gRPC status plus the structured details the server sent.
 *
 * `reason` is the stable code (`ErrorInfo.reason`, else `ErrorDetail.code`, else "").
 */
export class MeshRpcError extends Error {
  override readonly name = 'MeshRpcError';
  /** The numeric gRPC status code. */
  readonly code: grpc.status;
  /** The status code's name, e.g. `INVALID_ARGUMENT`. */
  readonly codeName: string;
  /** The server's status message. */
  readonly details: string;
  /** The stable reason code, e.g. `OUT_OF_RANGE`. */
  readonly reason: string;
  readonly errorInfo: ErrorInfo__Output | null;
  readonly fieldViolations: FieldViolation[];
  readonly quotaViolations: QuotaViolation[];
  /** Our structured detail: kind (`validation_failed`, `risk_rejected`, ...), code, message, details, field. */
  readonly detail: ErrorDetail__Output | null;
  /** Type names of details this client does not decode. */
  readonly otherDetails: string[];

  constructor(code: grpc.status, details: string, rich?: RichStatus) {
    const codeName = grpc.status[code] ?? String(code);
    const reason = rich?.errorInfo?.reason || rich?.detail?.code || '';
    // The mesh's status messages already start with the reason ("OUT_OF_RANGE: target must be ...").
    const withReason = reason && !details.startsWith(reason) ? `${reason}: ${details}` : details;
    super(`${codeName}: ${withReason}`);
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.reason = reason;
    this.errorInfo = rich?.errorInfo ?? null;
    this.fieldViolations = rich?.fieldViolations ?? [];
    this.quotaViolations = rich?.quotaViolations ?? [];
    this.detail = rich?.detail ?? null;
    this.otherDetails = rich?.otherDetails ?? [];
  }

  /** Whether the server could not be reached (rather than refusing the call). */
  get unreachable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.DEADLINE_EXCEEDED;
  }

  /** The error for a grpc-js failure, decoding `grpc-status-details-bin` when the trailer has it. */
  static fromServiceError(error: Partial<grpc.ServiceError>, protoDir?: string): MeshRpcError {
    const code = typeof error.code === 'number' ? error.code : grpc.status.UNKNOWN;
    const details = error.details ?? error.message ?? '';
    const raw = error.metadata?.get(STATUS_DETAILS_KEY)?.[0];
    let rich: RichStatus | undefined;
    if (raw !== undefined && typeof raw !== 'string') {
      try {
        rich = decodeRichStatus(raw, protoDir);
      } catch (decodeError) {
        // A trailer we cannot read must not hide the status itself.
        rich = { errorInfo: null, fieldViolations: [], quotaViolations: [], detail: null, otherDetails: [] };
        rich.otherDetails.push(`undecodable ${STATUS_DETAILS_KEY}: ${String(decodeError)}`);
      }
    }
    return new MeshRpcError(code, details, rich);
  }
}

/** `error` as a MeshRpcError (grpc-js errors are decoded; anything else is rethrown as is). */
export function toMeshError(error: unknown, protoDir?: string): unknown {
  if (error instanceof MeshRpcError) return error;
  if (typeof error === 'object' && error !== null && 'code' in error && 'metadata' in error) {
    return MeshRpcError.fromServiceError(error as grpc.ServiceError, protoDir);
  }
  return error;
}
