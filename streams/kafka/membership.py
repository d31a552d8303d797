"""Which worker serves which partition: advertised through the consumer group itself.

The fold's consumer group uses the range assignor (partition p of every input lands on one
worker). This subclass keeps that assignment and adds what Faust's own assignor adds: each
member sends its query URL in its subscription metadata, and the group leader hands every
member the complete ``partition -> URL`` map in its assignment. So after every rebalance each
worker knows, for the same generation, who owns what, with no extra topic or registry to keep
in sync. The protocol name stays ``range``, so it interoperates with a plain range member
(whose URL is simply unknown).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping

import orjson
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.structs import TopicPartition

from deliverytrack.models.settings import Settings


def query_url(settings: Settings) -> str:
    """Where other workers reach this worker's HTTP API (partition queries)."""
    if settings.advertised_url:
        return settings.advertised_url.rstrip("/")
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - bound to all: advertise the hostname
        host = socket.gethostname()
    return f"http://{host}:{settings.web_port}"


class Membership:
    """The latest partition -> URL map this worker received, and its own URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.owners: dict[int, str] = {}
        self.generation = 0

    def assignor(self) -> type[RangePartitionAssignor]:
        membership = self

        class AdvertisingRangeAssignor(RangePartitionAssignor):  # type: ignore[misc]
            name = "range"
            version = 0

            @classmethod
            def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
                return ConsumerProtocolMemberMetadata(
                    cls.version, list(topics), membership.url.encode()
                )

            @classmethod
            def assign(
                cls,
                cluster: ClusterMetadata,
                members: Mapping[str, ConsumerProtocolMemberMetadata],
            ) -> dict[str, ConsumerProtocolMemberAssignment]:
                assignments = super().assign(cluster, members)
                owners: dict[str, str] = {}
                for member_id, assignment in assignments.items():
                    url = (members[member_id].user_data or b"").decode(errors="replace")
                    for _topic, partitions in assignment.assignment:
                        for partition in partitions:
                            owners[str(partition)] = url
                payload = orjson.dumps({"owners": owners})
                return {
                    member_id: ConsumerProtocolMemberAssignment(
                        assignment.version, assignment.assignment, payload
                    )
                    for member_id, assignment in assignments.items()
                }

            @classmethod
            def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
                owners: dict[int, str] = {}
                if assignment.user_data:
                    try:
                        data = orjson.loads(assignment.user_data)
                        owners = {int(p): str(url) for p, url in data["owners"].items()}
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        owners = {}
                for tp in assignment.partitions():
                    owners.setdefault(tp.partition, membership.url)
                membership.owners = owners
                membership.generation += 1

        return AdvertisingRangeAssignor


PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A consumer's rebalance listener: hands the partitions, as sets, to two coroutines."""

    def __init__(self, revoked: PartitionsCallback, assigned: PartitionsCallback) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._assigned(set(assigned))
