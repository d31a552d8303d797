"""``deliverytrack worker`` whose RocksDB writes start failing after a number of batches, as a
full or broken disk would (fault injection for test_worker_failure.py).

    python tests/integration/faulty_worker.py <writes before the fault>
"""

from __future__ import annotations

import sys
from typing import Any

from deliverytrack.streams.cli.entry import main
from deliverytrack.streams.state import store


def inject(healthy_writes: int) -> None:
    write = store.PartitionStore.write
    calls = 0

    def failing_write(self: store.PartitionStore, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > healthy_writes:
            raise OSError(28, "No space left on device (injected)")
        write(self, *args, **kwargs)

    store.PartitionStore.write = failing_write  # type: ignore[method-assign]


if __name__ == "__main__":
    inject(int(sys.argv[1]))
    sys.exit(main(["worker"]))
