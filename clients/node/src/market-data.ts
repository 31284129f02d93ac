/** `MarketDataClient`: the engine's public, read-only `nautilus.engine.v1.MarketDataService`. */
import { MeshClient, type MeshClientOptions } from './call';
import type { Quote__Output } from './gen/nautilus/common/v1/Quote';
import type { GetQuoteResponse__Output } from './gen/nautilus/engine/v1/GetQuoteResponse';
import type { MarketDataServiceClient } from './gen/nautilus/engine/v1/MarketDataService';

/** A client of the engine's market data (no token: market data is public). */
export class MarketDataClient extends MeshClient<MarketDataServiceClient> {
  constructor(address: string, options: MeshClientOptions = {}) {
    super(address, (proto) => proto.nautilus.engine.v1.MarketDataService, {}, options);
  }

  /** The current quote of one instrument. */
  async getQuote(instrument: string): Promise<Quote__Output> {
    const response = await this.unary<GetQuoteResponse__Output>((md, opts, cb) => this.stub.getQuote({ instrument }, md, opts, cb));
    if (response.quote === null) throw new Error(`no quote for ${instrument}`);
    return response.quote;
  }

  /** Frames of quotes of `instruments` (all when empty), until the loop breaks or `stopStreams()`/`close()`. */
  async *streamQuotes(instruments: string[] = []): AsyncGenerator<Quote__Output[]> {
    for await (const frame of this.serverStream(this.stub.streamQuotes({ instruments }, this.metadata()))) {
      yield frame.quotes;
    }
  }
}
