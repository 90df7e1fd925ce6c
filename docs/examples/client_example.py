"""Call an action on a node and exchange events, from a script that runs no node.

    PLATYBUS_SECRET=... python docs/examples/client_example.py kitchen

Environment: REDIS_URL (default redis://127.0.0.1:6379/0), PLATYBUS_PREFIX (default
platybus), PLATYBUS_SECRET (the nodes' backends.redis.secret, if they have one).
"""

from __future__ import annotations

import os
import sys

from platybus.client import Client
from platybus.messages import Event


def main() -> int:
    node = sys.argv[1] if len(sys.argv) > 1 else "kitchen"
    client = Client(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get("PLATYBUS_PREFIX", "platybus"),
        secret=os.environ.get("PLATYBUS_SECRET"),
    )
    with client:
        # Every node's events (and our own) whose type starts with "script."
        client.subscribe("type=script.*", lambda e: print(f"{e.type} from {e.origin}: {e.data}"))

        response = client.request(node, "node.ping", timeout=5)
        if not response.ok:
            print(f"error: {response.error.type}: {response.error.message}", file=sys.stderr)
            return 1
        print(f"pong from {response.output['node']}")

        client.publish(Event(type="script.hello", data={"client": client.id}))
        client.wait(1.0)  # let the subscription print what arrives meanwhile
    return 0


if __name__ == "__main__":
    sys.exit(main())
