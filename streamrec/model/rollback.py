"""Roll the served scorer back to an earlier version and tell the system: the one procedure
behind ``streamrec model rollback`` and the operations service's ``POST /api/admin/model/rollback``.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrec.messages import ModelUpdate
from streamrec.model.registry import ModelRegistry, Say
from streamrec.model.updates import announce
from streamrec.settings import Settings


@dataclass(frozen=True)
class RolledBack:
    model: str
    version: int
    announce_error: str | None  # why ``model.updates`` was not written; None when it was


def registry_for(settings: Settings, model: str | None = None, say: Say = lambda message: None) -> ModelRegistry:
    """The registry of ``model`` (default: the trainer's) in the configured model repository."""
    return ModelRegistry(settings.model_repo, model or settings.trainer.model, settings.triton.grpc_url or "",
                         load_timeout_s=settings.trainer.load_timeout_s, say=say)


def roll_back(settings: Settings, *, to: int | None = None, model: str | None = None, say: Say = lambda message: None) -> RolledBack:
    """Serve version ``to`` (default: the one before the served one) without downtime, retire the
    newer ones, and announce it on ``model.updates``.

    Raises ``ValueError`` when there is no such version to go back to and
    :class:`streamrec.model.registry.VersionRejected` when Triton refuses it. The announcement is
    best effort: the rollback has happened when Kafka does not take it, so that is reported in
    :attr:`RolledBack.announce_error` rather than raised.
    """
    registry = registry_for(settings, model, say)
    version = registry.rollback(to)
    try:
        announce(settings, ModelUpdate(event="rolled_back", model=registry.model, version=version,
                                       metrics=registry.metadata(version).metrics), timeout_s=10)
    except Exception as error:  # noqa: BLE001 - reported to the caller, the rollback stands
        return RolledBack(registry.model, version, str(error) or type(error).__name__)
    return RolledBack(registry.model, version, None)
