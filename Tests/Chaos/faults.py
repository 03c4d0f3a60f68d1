"""The faults the harness injects while the load runs, and the schedule that injects them.

Two tracks run side by side, so faults also meet each other (an instance killed while the broker
restarts):
- infrastructure: the broker (connections closed, application stopped, node killed, memory
  alarm) and the database (sessions terminated, immediate restart);
- instances: processes (kill -9 phase, SIGSTOP), their network (latency, dropped connections, a
  cut) and poison messages.
Each track runs its kinds in a shuffled order, `cycles` times, spread over the load's duration.
Every fault is recorded with its start and end, and healed before the fault's coroutine returns;
crash-point faults come from inside the services (BAZAAR_FAULTS) and are counted from their logs.
"""

import asyncio
import datetime
import json
import signal
import time
import uuid

from broker import PublishFailed, publish
from stack import CommandFailed

INFRASTRUCTURE = ["broker.close-connections", "broker.stop-app", "broker.kill", "broker.memory-alarm",
                  "postgres.terminate-sessions", "postgres.restart"]
INSTANCES = ["process.kill-phase", "process.stop", "proxy.latency", "proxy.drop", "proxy.cut",
             "poison.not-json", "poison.unknown-type", "poison.bad-data"]

# What each kind takes, roughly, in seconds: used only to spread the schedule over the load.
ESTIMATED_SECONDS = {
    "broker.stop-app": 8, "broker.kill": 15, "broker.memory-alarm": 20, "postgres.restart": 3,
    "process.kill-phase": 15, "process.stop": 6, "proxy.latency": 10, "proxy.cut": 10,
}

# For each work queue, an event only that queue is bound to (from Shared/Contracts'
# EventCatalogue.subscriptions), its exchange, type and producer: a poison envelope published by
# the producer's broker user on that exchange with that routing key reaches that one consumer and
# passes its provenance checks (right exchange, right user-id), so it is judged on its type and
# data. Through the default exchange, or from another user, it would be parked as
# untrusted_source before they are looked at.
ROUTE_TO = {
    "order": ("payments", "payment.declined.v1", "PaymentDeclined", "payment"),
    "inventory": ("orders", "order.placed.v1", "OrderPlaced", "order"),
    "payment": ("inventory", "stock.reserved.v1", "StockReserved", "inventory"),
    "notification": ("payments", "payment.refunded.v1", "PaymentRefunded", "payment"),
}
POISON_HEADER = "x-chaos-poison"
EXPECTED_REASON = {"poison.not-json": "undecodable", "poison.unknown-type": "unknown_event",
                   "poison.bad-data": "invalid_data"}


class Faults:
    def __init__(self, stack, fleet, rng, clock, cut_seconds, log):
        self.stack = stack
        self.fleet = fleet
        self.rng = rng
        self.clock = clock  # seconds since the run started
        self.cut_seconds = cut_seconds  # (low, high)
        self.log = log
        self.record = []  # {kind, target, start, end, detail}
        self.poison = []  # {marker, kind, queue aimed at, exchange, routing key, expected reason, published}
        self.active = set()
        self.last_healed = None

    # -- bookkeeping -------------------------------------------------------------------------

    async def _inject(self, kind, target, action):
        entry = {"kind": kind, "target": target, "start": round(self.clock(), 1), "end": None, "detail": None}
        self.record.append(entry)
        label = f"{kind} {target}".strip()
        self.active.add(label)
        self.log(f"fault: {label}")
        try:
            entry["detail"] = await action()
        except (CommandFailed, PublishFailed, OSError, TimeoutError) as error:
            entry["detail"] = f"failed: {error}"
            self.log(f"fault {label} failed: {error}")
        finally:
            entry["end"] = round(self.clock(), 1)
            self.last_healed = time.monotonic()
            self.active.discard(label)

    def counts(self):
        counts = {}
        for entry in self.record:
            counts[entry["kind"]] = counts.get(entry["kind"], 0) + 1
        return counts

    # -- the schedule ------------------------------------------------------------------------

    async def run_schedule(self, duration, cycles):
        """Runs both tracks; each spreads its `cycles` rounds over about `duration` seconds."""
        await asyncio.gather(self._track(INFRASTRUCTURE, duration, cycles),
                             self._track(INSTANCES, duration, cycles))

    async def _track(self, kinds, duration, cycles):
        plan = []
        for _ in range(cycles):
            round_ = list(kinds)
            self.rng.shuffle(round_)
            plan += round_
        busy = sum(ESTIMATED_SECONDS.get(kind, 1) for kind in plan)
        gap = max(2.0, (duration - busy) / len(plan))
        for kind in plan:
            await asyncio.sleep(self.rng.uniform(0.5 * gap, 1.5 * gap))
            await self.inject(kind)

    async def inject(self, kind):
        await getattr(self, "_" + kind.replace(".", "_").replace("-", "_"))()

    # -- processes ----------------------------------------------------------------------------

    def _any_instance(self):
        return self.rng.choice(self.fleet.instances)

    async def _process_kill_phase(self, length=15.0, every=(2.0, 4.0)):
        """kill -9 of a random instance every few seconds; each kill is one fault."""
        end = time.monotonic() + length
        while time.monotonic() < end:
            instance = self._any_instance()

            async def kill(instance=instance):
                return "killed" if instance.signal(signal.SIGKILL) else "was not running"

            await self._inject("process.kill", instance.name, kill)
            await asyncio.sleep(self.rng.uniform(*every))

    async def _process_stop(self):
        """SIGSTOP for longer than two heartbeats (2 s each): the broker and the database see a
        silent peer, the instance wakes up to closed connections."""
        instance = self._any_instance()

        async def stop():
            if not instance.signal(signal.SIGSTOP):
                return "was not running"
            seconds = self.rng.uniform(5.0, 6.0)
            await asyncio.sleep(seconds)
            instance.signal(signal.SIGCONT)
            return f"stopped {seconds:.1f} s"

        await self._inject("process.stop", instance.name, stop)

    # -- the network between instances and servers ---------------------------------------------

    async def _proxy_latency(self):
        targets = self.rng.sample(self.fleet.instances, 2)

        async def slow():
            for proxy in (p for i in targets for p in i.proxies):
                proxy.set_latency(20, 100)
            await asyncio.sleep(10)
            for proxy in (p for i in targets for p in i.proxies):
                proxy.clear_latency()
            return "20-100 ms per chunk for 10 s"

        await self._inject("proxy.latency", ",".join(i.name for i in targets), slow)

    async def _proxy_drop(self):
        instance = self._any_instance()

        async def drop():
            return f"{sum(p.drop() for p in instance.proxies)} connections dropped"

        await self._inject("proxy.drop", instance.name, drop)

    async def _proxy_cut(self):
        instance = self._any_instance()
        link = self.rng.choice(["amqp", "postgres", "both"])
        proxies = {"amqp": [instance.amqp_proxy], "postgres": [instance.pg_proxy], "both": instance.proxies}[link]

        async def cut():
            seconds = self.rng.uniform(*self.cut_seconds)
            for proxy in proxies:
                proxy.cut()
            await asyncio.sleep(seconds)
            for proxy in proxies:
                proxy.heal()
            return f"{link} cut for {seconds:.0f} s"

        await self._inject("proxy.cut", f"{instance.name}/{link}", cut)

    # -- the broker ------------------------------------------------------------------------------

    async def _broker_close_connections(self):
        async def close():
            await self.stack.rabbitmqctl("close_all_connections", "chaos")
            return "every connection closed"

        await self._inject("broker.close-connections", "", close)

    async def _broker_stop_app(self):
        async def stop_app():
            await self.stack.rabbitmqctl("stop_app")
            await asyncio.sleep(self.rng.uniform(3, 6))
            await self.stack.rabbitmqctl("start_app", timeout=120)
            return "application stopped and started"

        await self._inject("broker.stop-app", "", stop_app)

    async def _broker_kill(self):
        async def kill():
            await self.stack.kill_broker()
            await asyncio.sleep(2)
            started = time.monotonic()
            await self.stack.start_broker()
            return f"node killed, back after {time.monotonic() - started:.0f} s"

        await self._inject("broker.kill", "", kill)

    async def _broker_memory_alarm(self):
        async def alarm():
            # A 1-byte watermark: the node is always above it, so it blocks every publishing
            # connection (consumers go on) until the watermark is restored.
            await self.stack.rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
            try:
                await asyncio.sleep(20)
            finally:
                await self.stack.rabbitmqctl("set_vm_memory_high_watermark",
                                             await self.stack.configured_memory_watermark())
            return "memory alarm for 20 s"

        await self._inject("broker.memory-alarm", "", alarm)

    # -- the database ----------------------------------------------------------------------------

    async def _postgres_terminate_sessions(self):
        async def terminate():
            return f"{await self.stack.terminate_service_sessions()} sessions terminated"

        await self._inject("postgres.terminate-sessions", "", terminate)

    async def _postgres_restart(self):
        async def restart():
            await self.stack.restart_postgres_immediately()
            return "restarted -m immediate"

        await self._inject("postgres.restart", "", restart)

    # -- poison messages -----------------------------------------------------------------------

    async def _publish_poison(self, kind, queue, exchange, routing_key, body, producer=None):
        """Publishes a poison message marked with a header of its own. `producer`: the service
        whose broker user sends it, so that it passes the consumer's check of who published and
        is judged on its content; None sends it as the admin."""
        marker = str(uuid.uuid4())
        url = self.stack.settings[f"{producer.upper()}_AMQP_URL"] if producer else self.stack.admin_amqp_url

        async def publish_it():
            # Recorded first: an attempt given up on (the broker blocking publishers) may still
            # have reached the queue, and the marker must then be recognised as ours.
            entry = {"marker": marker, "kind": kind, "queue": queue, "exchange": exchange,
                     "routing_key": routing_key, "reason": EXPECTED_REASON[kind], "published": False}
            self.poison.append(entry)
            # The broker may be down or blocking publishers (the other track): try for a while.
            loop = asyncio.get_running_loop()
            for attempt in range(12):
                try:
                    await loop.run_in_executor(None, publish, url, exchange, routing_key, body,
                                               {POISON_HEADER: marker}, producer is not None)
                    break
                except PublishFailed:
                    if attempt == 11:
                        raise
                    await asyncio.sleep(5)
            entry["published"] = True
            return f"marker {marker}"

        await self._inject(kind, queue, publish_it)

    async def _poison_not_json(self):
        queue = self.rng.choice(list(ROUTE_TO))
        await self._publish_poison("poison.not-json", queue, "", queue, "this is not JSON {")

    def _envelope(self, event_type, source, data):
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        order_id = str(uuid.uuid4())
        return json.dumps({"eventId": str(uuid.uuid4()), "type": event_type, "version": 1, "occurredAt": now,
                           "correlationId": order_id, "source": source, "data": data})

    async def _poison_unknown_type(self):
        queue = self.rng.choice(list(ROUTE_TO))
        exchange, routing_key, _, source = ROUTE_TO[queue]
        body = self._envelope("ChaosUnheardOf", source, {"note": "no service knows this event"})
        await self._publish_poison("poison.unknown-type", queue, exchange, routing_key, body, source)

    async def _poison_bad_data(self):
        queue = self.rng.choice(list(ROUTE_TO))
        exchange, routing_key, event_type, source = ROUTE_TO[queue]
        body = self._envelope(event_type, source, {"orderId": 42, "note": f"not what {event_type} holds"})
        await self._publish_poison("poison.bad-data", queue, exchange, routing_key, body, source)
