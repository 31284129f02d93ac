"""Runs each strategy's canary controller against live measurement and applies its decisions.

- While a canary is in SHADOW it is paper-traded in its paper book (``<canary>@paper``), and so is a
  paper twin of the stable model (``<stable>@paper``): the shadow comparison is paper against paper.
  Paper books never mix with live ones, so a canary starts its first live step flat.
- From the first live step, the canary and the stable model share the strategy's flow by the
  controller's weights, and their live returns are compared on the same sampling timestamps.
- Each run's paired series live in bounded memory (:mod:`ops_server.canary.return_window`): samples before the
  current step and the live track record are dropped (the checks never read them), and at most
  ``window_samples`` are held; the state store saves only those.
- Every transition changes the registry's routing weights (and modes) for the next signal, is
  audited as an event, logged by the controller and exported as ``canary_weight{strategy,model}``.
- A canary block that requires a backtest (``require_backtest``) holds its canary in SHADOW while the backtest
  report is missing or fails its thresholds (:mod:`ops_server.canary.backtest_gate`): no check runs, and an
  operator promotion out of SHADOW is refused with ``BACKTEST_REQUIRED``. The report is read again while held; the
  hard guards still apply.
- ``window_samples`` must hold the bars a check needs (the larger of ``min_observations`` and
  ``shadow_min_observations``, in samples): a smaller window is refused at start (``ConfigError``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, InitVar, dataclass, field
from datetime import datetime
from typing import Any

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import ConfigError, ValidationError
from ops_server.canary.backtest_gate import BacktestStatus, BacktestVerdict, judge_backtest
from ops_server.canary.controller import CanaryController
from ops_server.canary.events import CanaryEvent, CanaryState
from ops_server.canary.guards import GuardSnapshot
from ops_server.canary.return_window import DEFAULT_WINDOW_SAMPLES, ReturnWindow
from ops_server.model_registry import ModelRegistry, RoutingMode, lookup, paper_book

log = logging.getLogger(__name__)


@dataclass
class CanaryRun:
    """One controller and the paired return series it judges."""

    controller: CanaryController
    canary_returns: ReturnWindow = field(default_factory=ReturnWindow)
    stable_returns: ReturnWindow = field(default_factory=ReturnWindow)
    backtest: BacktestVerdict = field(default_factory=lambda: BacktestVerdict(BacktestStatus.NONE))
    """The canary model's backtest report as judged against the canary block."""

    def forget_unread(self) -> None:
        """Drop the samples no check reads again: those before the current step and the live track record."""
        saved = self.controller.snapshot()
        step_start = int(saved["step_start_obs"])  # type: ignore[call-overload]
        live_start = saved["live_start_obs"]
        first = step_start if live_start is None else min(step_start, int(live_start))  # type: ignore[call-overload]
        self.canary_returns.forget_before(first)
        self.stable_returns.forget_before(first)


@dataclass(eq=False, repr=False)
class CanaryManager:
    """The canaries of every strategy that has one in the registry.

    Args:
        registry: the model registry whose weights and modes the canaries drive.
        publish: called with every controller event (audit, WatchEvents, metrics).
        now: clock (timezone-aware datetimes); replaceable later through :attr:`clock`.
        sample_seconds: the interval between two recorded returns, seconds (ops' ``sample_interval_seconds``).
        window_samples: most samples held per return series (ops' ``canary_window_samples``), count.
    """

    registry: ModelRegistry
    publish: Callable[[CanaryEvent], None]
    now: InitVar[Callable[[], datetime]] = REAL_CLOCK.now
    _: KW_ONLY
    sample_seconds: float = 1.0
    window_samples: int = DEFAULT_WINDOW_SAMPLES

    def __post_init__(self, now: Callable[[], datetime]) -> None:
        self.clock = now
        self.runs: dict[str, CanaryRun] = {}
        for strategy_id, spec in self.registry.data.strategies.items():
            if spec.canary is None:
                continue
            canary_model = spec.canary.model_id
            if canary_model == spec.stable_model:
                continue  # already promoted: nothing to roll out
            config = spec.canary.config()
            # Every model the registry lists for the strategy is a version that was tried: the DSR's trials.
            controller = CanaryController(
                strategy_id,
                canary_model,
                spec.stable_model,
                config,
                self.clock(),
                sample_seconds=self.sample_seconds,
                trials=len(spec.models),
            )
            self.runs[strategy_id] = self._new_run(controller)
            self._apply(controller)

    def _new_run(
        self, controller: CanaryController, saved: Mapping[str, Any] | None = None, name: str = ""
    ) -> CanaryRun:
        saved = saved or {}
        first = int(saved.get("first_index", 0))
        limit = self.window_samples
        config = controller.config
        bars = max(config.min_observations, config.shadow_min_observations)
        needed = bars * controller.samples_per_bar
        if limit < needed:  # a check would judge fewer bars than its minimum (or too few to compute at all)
            raise ConfigError(
                f"canary_window_samples {limit} holds fewer samples than a check of strategy "
                f"{controller.strategy!r} needs: {bars} bars of {controller.samples_per_bar} samples "
                f"(bar_seconds {config.bar_seconds:g} / sample_interval_seconds {self.sample_seconds:g}) = {needed}",
                {"strategy": controller.strategy, "canary_window_samples": str(limit), "needed": str(needed)},
            )
        run = CanaryRun(
            controller,
            ReturnWindow(saved.get("canary", ()), first, limit),
            ReturnWindow(saved.get("stable", ()), first, limit),
            judge_backtest(controller.config, controller.canary_model),
        )
        if len(run.canary_returns) != len(run.stable_returns):
            raise ValueError(f"saved canary of {name!r}: paired series of different lengths")
        return run

    def run(self, strategy_id: str) -> CanaryRun:
        """The strategy's canary run.

        Raises:
            NotFoundError: ``UNKNOWN_STRATEGY`` for a strategy the registry does not have, ``NO_CANARY`` for one
                without a canary.
        """
        lookup(
            self.registry.data.strategies,
            strategy_id,
            "UNKNOWN_STRATEGY",
            "unknown strategy {!r}",
            field="strategy_id",
            detail="strategy",
        )
        return lookup(
            self.runs, strategy_id, "NO_CANARY", "strategy {!r} has no canary", field="strategy_id", detail="strategy"
        )

    def owns_weights(self, strategy_id: str) -> bool:
        """True while a canary is in progress for the strategy: its controller, not an operator, sets the weights."""
        run = self.runs.get(strategy_id)
        return run is not None and not run.controller.state.terminal

    def shadow_twins(self) -> dict[str, str]:
        """Stable model -> paper twin id, for strategies whose canary is in SHADOW."""
        return {
            run.controller.stable_model: paper_book(run.controller.stable_model)
            for run in self.runs.values()
            if run.controller.state is CanaryState.SHADOW
        }

    def record_sample(self, returns: Mapping[str, float]) -> None:
        """Append this sample's paired returns (paper pair in shadow, live pair after)."""
        for run in self.runs.values():
            c = run.controller
            if c.state.terminal:
                continue
            shadow = c.state is CanaryState.SHADOW
            canary = paper_book(c.canary_model) if shadow else c.canary_model
            stable = paper_book(c.stable_model) if shadow else c.stable_model
            if canary in returns and stable in returns:
                run.canary_returns.append(returns[canary])
                run.stable_returns.append(returns[stable])

    def evaluate(self, guards: Callable[[str], GuardSnapshot]) -> list[CanaryEvent]:
        """Run every due check and guard; apply and publish what changed.

        A canary held in SHADOW for its backtest gets its guards but no check. One canary's failure is logged and
        leaves the others' checks and guards running."""
        events: list[CanaryEvent] = []
        now = self.clock()
        for strategy_id, run in self.runs.items():
            c = run.controller
            try:
                held = self._held_in_shadow(run, reread=True)
                new = c.evaluate(now, run.canary_returns, run.stable_returns, guards(c.canary_model), checks=not held)
                events.extend(self._after(c, new))
                run.forget_unread()
            except Exception:
                log.exception("[CANARY] evaluating the canary of strategy %s failed; the others go on", strategy_id)
        return events

    def operate(self, strategy_id: str, action: str, reason: str, **kwargs: Any) -> list[CanaryEvent]:
        """An operator call: promote, rollback, pause, resume or confirm."""
        run = self.run(strategy_id)
        controller = run.controller
        if action == "promote" and self._held_in_shadow(run, reread=True):
            raise ValidationError(
                "BACKTEST_REQUIRED",
                f"{controller.canary_model} stays in SHADOW: {run.backtest.note}",
                {"strategy": strategy_id, "backtest": run.backtest.status.value, "report": run.backtest.report},
            )
        method = getattr(controller, action)
        new: list[CanaryEvent] = method(self.clock(), reason, **kwargs)
        return self._after(controller, new)

    def _held_in_shadow(self, run: CanaryRun, *, reread: bool) -> bool:
        """True while the canary is in SHADOW and its policy asks for a backtest that does not allow leaving it."""
        c = run.controller
        if c.state is not CanaryState.SHADOW or not c.config.require_backtest:
            return False
        if reread:
            verdict = judge_backtest(c.config, c.canary_model)
            if verdict != run.backtest and verdict.blocks_promotion:
                log.warning("[CANARY] %s held in shadow: %s", c.canary_model, verdict.note)
            run.backtest = verdict
        return run.backtest.blocks_promotion

    def _after(self, controller: CanaryController, events: list[CanaryEvent]) -> list[CanaryEvent]:
        moved = any(e.from_state != e.to_state or e.step_percent_before != e.step_percent_after for e in events)
        if moved:
            self._apply(controller)
        for event in events:
            self.publish(event)
        return events

    def _apply(self, controller: CanaryController) -> None:
        """Make the registry route as the controller says."""
        state = controller.state
        canary, stable = controller.canary_model, controller.stable_model
        if state is CanaryState.SHADOW or (state is CanaryState.PAUSED and controller.step_percent == 0):
            self.registry.set_weights(
                controller.strategy, {stable: 1.0}, modes={canary: RoutingMode.SHADOW, stable: RoutingMode.LIVE}
            )
        elif state is CanaryState.ROLLED_BACK:
            # Weight 0 leaves the canary a quota of 0: its next signals only unwind what it holds live.
            self.registry.set_weights(
                controller.strategy, {stable: 1.0}, modes={canary: RoutingMode.LIVE, stable: RoutingMode.LIVE}
            )
        elif state is CanaryState.PROMOTED:
            # The canary becomes the stable model; the old stable keeps weight 0 (its position unwinds).
            self.registry.set_weights(
                controller.strategy,
                {canary: 1.0},
                modes={canary: RoutingMode.LIVE, stable: RoutingMode.LIVE},
                stable_model=canary,
            )
        else:
            self.registry.set_weights(
                controller.strategy, controller.weights(), modes={canary: RoutingMode.LIVE, stable: RoutingMode.LIVE}
            )

    def snapshot(self) -> dict[str, Any]:
        """Every run's controller and the samples its checks may still read (``first_index``: the absolute index of
        the first saved sample)."""
        saved: dict[str, Any] = {}
        for strategy_id, run in self.runs.items():
            run.forget_unread()
            saved[strategy_id] = {
                "controller": run.controller.snapshot(),
                "first_index": run.canary_returns.oldest,
                "canary": run.canary_returns.held,
                "stable": run.stable_returns.held,
            }
        return saved

    def restore(self, state: Mapping[str, Any]) -> None:
        """Put back the saved runs. A canary promoted to 100% is the strategy's stable model now, so the registry starts
        no run for it; its finished run comes back all the same (its status, and ``CANARY_FINISHED`` to a control),
        owning no weights."""
        for strategy_id, saved in state.items():
            controller = CanaryController.restore(saved["controller"])
            if strategy_id not in self.runs:
                spec = self.registry.data.strategies.get(strategy_id)
                stable = spec.stable_model if spec is not None else None
                if controller.state is CanaryState.PROMOTED and stable == controller.canary_model:
                    self.runs[strategy_id] = self._new_run(controller, saved, strategy_id)
                continue
            self.runs[strategy_id] = self._new_run(controller, saved, strategy_id)
            self._apply(controller)
