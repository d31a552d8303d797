"""Our murmur2 partitioning is Kafka's: the same partition as aiokafka's DefaultPartitioner
(the Java client's) for any key bytes and partition count."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.streams.kafka.partitioner import murmur2, partition_for


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_murmur2_is_the_java_clients(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_every_client_puts_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_known_values() -> None:
    # Kafka's own test vectors (clients/.../UtilsTest.java, testMurmur2).
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, signed in vectors.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


def test_long_keys_do_not_grow_the_format_cache() -> None:
    from deliverytrack.streams.kafka import partitioner

    for size in range(4 * 64, 4 * 200, 4):
        murmur2(bytes(size))
    assert len(partitioner._words_of) <= partitioner._CACHED_WORDS  # noqa: SLF001
