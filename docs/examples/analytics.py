import asyncio
import os
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy


async def main() -> None:
    # `make dev` writes its embedded nats-server's URL to .livechat/nats-url.
    url = os.environ.get("LIVECHAT_NATS_URL") or Path(".livechat/nats-url").read_text().strip()
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "livechat.usage.recorded", durable="my-analytics", stream="LIVECHAT_USAGE",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),  # or BY_START_TIME + opt_start_time
    )
    for msg in await sub.fetch(1, timeout=10):  # the oldest entry not yet acked
        print(msg.data.decode())
        await msg.ack()
    await nc.close()


asyncio.run(main())
