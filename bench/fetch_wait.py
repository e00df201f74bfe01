"""How long a consumer waiting on the embedded broker takes to see a new message, by fetch wait.

    python bench/fetch_wait.py [--messages 20]

Faust's aiokafka driver creates its consumer with ``fetch_max_wait_ms=1500`` (not a setting). This sends
single messages, one every 0.37 s, to two 8-partition topics' first partition and times their arrival at an
aiokafka consumer assigned all 16 partitions, with that wait and with 10 ms. Medians and maxima in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.embedded import EmbeddedBroker  # noqa: E402

WAITS_MS = (1500, 10)


async def delays_ms(bootstrap: str, wait_ms: int, messages: int) -> list[float]:
    """Send-to-receipt delays of ``messages`` single messages for a consumer with ``wait_ms`` fetch wait."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    delays: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, partition) for topic in ("a", "b") for partition in range(8)])
        await consumer.seek_to_end()

        async def receive() -> None:
            while len(delays) < messages:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    delays.extend((time.time() - float(message.value)) * 1000.0 for message in batch)

        receiving = asyncio.create_task(receive())
        for _ in range(messages):
            await asyncio.sleep(0.37)
            await producer.send_and_wait("a", str(time.time()).encode())
        await asyncio.wait_for(receiving, 30)
    finally:
        await consumer.stop()
        await producer.stop()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        KafkaAdminClient(bootstrap_servers=[broker.bootstrap]).create_topics([NewTopic(name, 8, 1) for name in ("a", "b")])
        results = {wait: asyncio.run(delays_ms(broker.bootstrap, wait, args.messages)) for wait in WAITS_MS}
    print("\n| fetch wait ms | messages | median delay ms | max delay ms |")
    print("|---|---|---|---|")
    for wait, delays in results.items():
        print(f"| {wait} | {len(delays)} | {statistics.median(delays):.1f} | {max(delays):.1f} |")
    slow, fast = (statistics.median(results[wait]) for wait in WAITS_MS)
    print(f"ratio: a message waits {slow / fast:.1f}x as long with Faust's 1,500 ms fetch wait as with 10 ms")


if __name__ == "__main__":
    main()
