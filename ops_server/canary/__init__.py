"""Canary routing: a new model goes from shadow trading through a step schedule to 100%, or is rolled back.

- ``config``: the rollout policy (:class:`CanaryConfig`, the registry's ``canary`` block).
- ``stats``: Sharpe difference test (Jobson-Korkie/Memmel), PSR and minimum track record length.
- ``events``: states, check results, events and the status view, with their JSON forms.
- ``guards``: the hard guards that roll a canary back at once.
- ``controller``: one canary's state machine (pure: the caller feeds clock, returns and guards).
- ``manager``: every strategy's canary against live measurement; applies weights to the registry (imported as
  ``ops_server.canary.manager``: it builds on the model registry, which reads this package's config).
"""

from ops_server.canary import events
from ops_server.canary.config import CanaryConfig
from ops_server.canary.controller import CanaryController
from ops_server.canary.events import *  # noqa: F403
from ops_server.canary.guards import GuardSnapshot

# The vocabulary of ``events`` (its ``__all__``) is public here as a whole.
__all__ = ["CanaryConfig", "CanaryController", "GuardSnapshot"]
__all__ += events.__all__
