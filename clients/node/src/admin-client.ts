/**
 * `OpsAdminClient`: an operator's client of `nautilus.ops.v1.OpsAdminService`, authenticated by
 * `x-ops-token`. It drives the canary (promote, rollback, pause, resume, confirm), the capital
 * allocator (trigger a cycle, set routing weights) and trading states (per model, global, kill switch).
 * The read side (canary status, allocations, trading state) is on OpsService: `OpsClient`.
 */
import { ADMIN_TOKEN_HEADER, MeshClient, type MeshClientOptions } from './call';
import type { TradingState, TradingState__Output } from './gen/nautilus/common/v1/TradingState';
import type { CanaryStatus__Output } from './gen/nautilus/ops/v1/CanaryStatus';
import type { ConfigTarget } from './gen/nautilus/ops/v1/ConfigTarget';
import type { EngageKillSwitchResponse__Output } from './gen/nautilus/ops/v1/EngageKillSwitchResponse';
import type { ModelInfo__Output } from './gen/nautilus/ops/v1/ModelInfo';
import type { OpsAdminServiceClient } from './gen/nautilus/ops/v1/OpsAdminService';
import type { ReleaseKillSwitchResponse__Output } from './gen/nautilus/ops/v1/ReleaseKillSwitchResponse';
import type { ReloadConfigResponse__Output } from './gen/nautilus/ops/v1/ReloadConfigResponse';
import type { SetRoutingWeightsResponse__Output } from './gen/nautilus/ops/v1/SetRoutingWeightsResponse';
import type { SetTradingStateResponse__Output } from './gen/nautilus/ops/v1/SetTradingStateResponse';
import type { TriggerAllocationResponse__Output } from './gen/nautilus/ops/v1/TriggerAllocationResponse';

/** Options of an OpsAdminClient. */
export interface OpsAdminClientOptions extends MeshClientOptions {
  /** Sent as `x-ops-token` (UNAUTHENTICATED without; PERMISSION_DENIED when ops has no admin token). */
  adminToken?: string;
}

function status(response: { status: CanaryStatus__Output | null }): CanaryStatus__Output {
  if (response.status === null) throw new Error('canary call answered without a status');
  return response.status;
}

/** An operator's client of OpsAdminService. */
export class OpsAdminClient extends MeshClient<OpsAdminServiceClient> {
  constructor(address: string, options: OpsAdminClientOptions = {}) {
    super(address, (proto) => proto.nautilus.ops.v1.OpsAdminService, { [ADMIN_TOKEN_HEADER]: options.adminToken }, options);
  }

  /** Runs an allocation cycle now (PERMISSION_DENIED when the policy disables manual allocation). */
  triggerAllocation(reason = ''): Promise<TriggerAllocationResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.triggerAllocation({ reason }, md, opts, cb));
  }

  /** Sets a strategy's routing weights (they must sum to 1 +-0.001; models not named get 0). */
  async setRoutingWeights(strategyId: string, weights: Record<string, number>, reason: string): Promise<ModelInfo__Output[]> {
    const response = await this.unary<SetRoutingWeightsResponse__Output>((md, opts, cb) =>
      this.stub.setRoutingWeights({ strategyId, weights, reason }, md, opts, cb),
    );
    return response.models;
  }

  /** Promotes a strategy's canary one step, or to 100% with `toFull`. */
  async promoteCanary(strategyId: string, reason: string, toFull = false): Promise<CanaryStatus__Output> {
    return status(await this.unary((md, opts, cb) => this.stub.promoteCanary({ strategyId, reason, toFull }, md, opts, cb)));
  }

  async rollbackCanary(strategyId: string, reason: string): Promise<CanaryStatus__Output> {
    return status(await this.unary((md, opts, cb) => this.stub.rollbackCanary({ strategyId, reason }, md, opts, cb)));
  }

  async pauseCanary(strategyId: string, reason: string): Promise<CanaryStatus__Output> {
    return status(await this.unary((md, opts, cb) => this.stub.pauseCanary({ strategyId, reason }, md, opts, cb)));
  }

  async resumeCanary(strategyId: string, reason: string): Promise<CanaryStatus__Output> {
    return status(await this.unary((md, opts, cb) => this.stub.resumeCanary({ strategyId, reason }, md, opts, cb)));
  }

  /** Confirms the step to 100% when the confirmation gate holds it. */
  async confirmCanary(strategyId: string, reason: string): Promise<CanaryStatus__Output> {
    return status(await this.unary((md, opts, cb) => this.stub.confirmCanary({ strategyId, reason }, md, opts, cb)));
  }

  /** Sets one model's trading state, or the global state when `modelId` is "". */
  setTradingState(modelId: string, state: TradingState, reason: string): Promise<SetTradingStateResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.setTradingState({ modelId, state, reason }, md, opts, cb));
  }

  /** Halts everything and cancels every resting order at the engine. */
  engageKillSwitch(reason = ''): Promise<EngageKillSwitchResponse__Output> {
    return this.unary((md, opts, cb) => this.stub.engageKillSwitch({ reason }, md, opts, cb));
  }

  /** Releases the kill switch; returns the global trading state. */
  async releaseKillSwitch(reason: string): Promise<TradingState__Output> {
    const response = await this.unary<ReleaseKillSwitchResponse__Output>((md, opts, cb) => this.stub.releaseKillSwitch({ reason }, md, opts, cb));
    return response.globalState;
  }

  /** Reloads a config file (a bad file is refused and the previous config stays in force). */
  async reloadConfig(target: ConfigTarget): Promise<string> {
    const response = await this.unary<ReloadConfigResponse__Output>((md, opts, cb) => this.stub.reloadConfig({ target }, md, opts, cb));
    return response.message;
  }
}
