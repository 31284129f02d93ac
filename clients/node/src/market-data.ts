/** `MarketDataClient`: the engine's public, read-only `nautilus.engine.v1.MarketDataService`. */
import * as grpc from '@grpc/grpc-js';

import { MeshClient, type MeshClientOptions } from './call';
import { toMeshError } from './errors';
import type { Quote__Output } from './gen/nautilus/common/v1/Quote';
import type { GetQuoteResponse__Output } from './gen/nautilus/engine/v1/GetQuoteResponse';
import type { MarketDataServiceClient } from './gen/nautilus/engine/v1/MarketDataService';
import type { StreamQuotesResponse__Output } from './gen/nautilus/engine/v1/StreamQuotesResponse';

/** A client of the engine's market data (no token: market data is public). */
export class MarketDataClient extends MeshClient<MarketDataServiceClient> {
  private readonly streams = new Set<grpc.ClientReadableStream<StreamQuotesResponse__Output>>();

  constructor(address: string, options: MeshClientOptions = {}) {
    super(address, (proto) => proto.nautilus.engine.v1.MarketDataService, {}, options);
  }

  /** The current quote of one instrument. */
  async getQuote(instrument: string): Promise<Quote__Output> {
    const response = await this.unary<GetQuoteResponse__Output>((md, opts, cb) => this.stub.getQuote({ instrument }, md, opts, cb));
    if (response.quote === null) throw new Error(`no quote for ${instrument}`);
    return response.quote;
  }

  /** Frames of quotes of `instruments` (all when empty) until `stopQuotes()` or `close()`. */
  async *streamQuotes(instruments: string[] = []): AsyncGenerator<Quote__Output[]> {
    const call = this.stub.streamQuotes({ instruments }, this.metadata());
    this.streams.add(call);
    try {
      for await (const frame of call) {
        yield (frame as StreamQuotesResponse__Output).quotes;
      }
    } catch (error) {
      const mapped = toMeshError(error, this.protoDir);
      if (!(mapped instanceof Error && 'code' in mapped && mapped.code === grpc.status.CANCELLED)) throw mapped;
    } finally {
      this.streams.delete(call);
      call.cancel();
    }
  }

  /** Ends every open quote stream (their iterations return). */
  stopQuotes(): void {
    for (const call of this.streams) call.cancel();
  }

  override close(): void {
    this.stopQuotes();
    super.close();
  }
}
