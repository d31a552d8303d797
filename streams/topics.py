"""Topic names: the only place they are spelled out. One prefix configures them all."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deliverytrack.models.settings import Settings


@dataclass(frozen=True, slots=True)
class Topics:
    send_results: str
    provider_webhooks: str
    commands: str
    status_changes: str
    dead_letters: str
    failover_requests: str
    webhook_deliveries: str
    records_changelog: str
    due_checks: str
    poll_requests: str
    observations: str
    provider_ids: str
    correlated_reports: str
    webhook_retries: str
    record_deletions: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        """The topics of a deployment (``DELIVERYTRACK_TOPIC_PREFIX`` and ``_APP_ID``)."""
        return cls.from_prefix(settings.topic_prefix, settings.app_id)

    @classmethod
    def from_prefix(cls, prefix: str, app_id: str) -> Topics:
        return cls(
            send_results=f"{prefix}send-results",
            provider_webhooks=f"{prefix}provider-webhooks",
            commands=f"{prefix}commands",
            status_changes=f"{prefix}status-changes",
            dead_letters=f"{prefix}dead-letters",
            failover_requests=f"{prefix}failover-requests",
            webhook_deliveries=f"{prefix}webhook-deliveries",
            # Internal, owned by the app: compact-only (never delete-retention).
            records_changelog=f"{prefix}{app_id}-records_by_message_id-changelog",
            due_checks=f"{prefix}{app_id}-due-checks",
            poll_requests=f"{prefix}{app_id}-poll-requests",
            observations=f"{prefix}{app_id}-observations",
            # Keyed providerId:providerMessageId, co-partitioned with provider-webhooks.
            provider_ids=f"{prefix}{app_id}-provider-ids",
            correlated_reports=f"{prefix}{app_id}-correlated-reports",
            webhook_retries=f"{prefix}{app_id}-webhook-retries",
            record_deletions=f"{prefix}record-deletions",
        )

    def for_replay(self, prefix: str, replay_app_id: str) -> Topics:
        """Same inputs, outputs of a replay's own (so a replay never writes live topics)."""
        own = Topics.from_prefix(prefix, replay_app_id)
        return dataclasses.replace(
            self,
            status_changes=f"{prefix}{replay_app_id}-status-changes",
            dead_letters=f"{prefix}{replay_app_id}-dead-letters",
            failover_requests=f"{prefix}{replay_app_id}-failover-requests",
            webhook_deliveries=f"{prefix}{replay_app_id}-webhook-deliveries",
            record_deletions=f"{prefix}{replay_app_id}-record-deletions",
            webhook_retries=own.webhook_retries,
            records_changelog=own.records_changelog,
            poll_requests=own.poll_requests,
            provider_ids=own.provider_ids,
        )

    @property
    def fold_inputs(self) -> tuple[str, ...]:
        """Topics the fold consumes, all keyed by messageId, in tie-break order."""
        return (
            self.send_results,
            self.commands,
            self.observations,
            self.due_checks,
            self.correlated_reports,
        )

    @property
    def co_partitioned(self) -> tuple[str, ...]:
        """Public topics that must have the partition count of send-results."""
        return (self.commands, self.provider_webhooks)

    @property
    def internal(self) -> tuple[str, ...]:
        """Owned by the app and co-partitioned with send-results."""
        return (
            self.due_checks,
            self.poll_requests,
            self.observations,
            self.provider_ids,
            self.correlated_reports,
            self.webhook_retries,
        )

    @property
    def public(self) -> tuple[str, ...]:
        return (
            self.send_results,
            self.provider_webhooks,
            self.commands,
            self.status_changes,
            self.dead_letters,
            self.failover_requests,
            self.webhook_deliveries,
            self.record_deletions,
        )


def faust_leader_topic(prefix: str, app_id: str) -> str:
    """Faust's leader-election topic (one partition, no data of ours), under the prefix like
    every internal topic: Faust names it ``<app id>-__assignor-__leader``, so two deployments
    with different prefixes on one cluster shared it."""
    return f"{prefix}{app_id}-__assignor-__leader"
