/** What every client shares: channel credentials, token metadata, deadlines, error mapping. */
import * as grpc from '@grpc/grpc-js';

import { toMeshError } from './errors';
import { defaultProtoDir, loadMeshProto, type MeshProto } from './protos';

export const STRATEGY_TOKEN_HEADER = 'x-strategy-token';
export const ADMIN_TOKEN_HEADER = 'x-ops-token';
export const DEFAULT_TIMEOUT_MS = 5000;

/** Options every client takes. */
export interface MeshClientOptions {
  /** Deadline of each unary call in milliseconds (streams have none). Default 5000. */
  timeoutMs?: number;
  /** Folder holding the contract (`nautilus/...`); default `$NAUTILUS_PROTOS` or the repository's `protos/`. */
  protoDir?: string;
  /** Default: insecure (plaintext), as the mesh serves on loopback or inside a cluster network. */
  credentials?: grpc.ChannelCredentials;
  /** grpc-js channel options, e.g. `grpc.max_receive_message_length`. */
  channelOptions?: grpc.ChannelOptions;
}

type UnaryInvoker<Res> = (
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Res>,
) => grpc.ClientUnaryCall;

/** The base of the clients: one grpc-js client, one token header. */
export abstract class MeshClient<Stub extends grpc.Client> {
  protected readonly stub: Stub;
  protected readonly timeoutMs: number;
  protected readonly protoDir: string;
  private readonly headers: Record<string, string>;
  private readonly streams = new Set<grpc.ClientReadableStream<unknown>>();
  private readonly cancelled = new WeakSet<grpc.ClientReadableStream<unknown>>();

  protected constructor(
    address: string,
    build: (proto: MeshProto) => new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => Stub,
    headers: Record<string, string | undefined>,
    options: MeshClientOptions,
  ) {
    this.protoDir = options.protoDir ?? defaultProtoDir();
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const Ctor = build(loadMeshProto(this.protoDir));
    this.stub = new Ctor(address, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions);
    this.headers = {};
    for (const [key, value] of Object.entries(headers)) {
      if (value) this.headers[key] = value;
    }
  }

  /** The metadata sent with every call (the token, when one was given). */
  protected metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    for (const [key, value] of Object.entries(this.headers)) md.set(key, value);
    return md;
  }

  /** One unary call with the deadline and the token; failures become MeshRpcError. */
  protected unary<Res>(invoke: UnaryInvoker<Res>): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      invoke(this.metadata(), { deadline: Date.now() + this.timeoutMs }, (error, response) => {
        if (error) reject(toMeshError(error, this.protoDir));
        else if (response === undefined) reject(new Error('empty response'));
        else resolve(response);
      });
    });
  }

  /**
   * Iterates a server stream until the server ends it, the caller stops iterating (the call is then
   * cancelled) or `close()`/`stopStreams()` cancels it; other failures are thrown as MeshRpcError.
   */
  protected async *serverStream<T>(call: grpc.ClientReadableStream<T>): AsyncGenerator<T> {
    this.streams.add(call);
    try {
      for await (const message of call) yield message as T;
    } catch (error) {
      // After our own cancel (or close(), which can fail the call UNAVAILABLE first) the end is not a failure.
      if (!this.cancelled.has(call)) throw toMeshError(error, this.protoDir);
    } finally {
      this.streams.delete(call);
      this.cancelStream(call);
    }
  }

  private cancelStream(call: grpc.ClientReadableStream<unknown>): void {
    this.cancelled.add(call);
    call.cancel();
  }

  /** Ends every open server stream of this client (their iterations return). */
  stopStreams(): void {
    for (const call of this.streams) this.cancelStream(call);
  }

  /** Resolves once the channel is connected (rejects after `timeoutMs`). */
  waitForReady(timeoutMs: number = this.timeoutMs): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Closes the channel; calls in flight are cancelled. */
  close(): void {
    this.stopStreams();
    this.stub.close();
  }
}
