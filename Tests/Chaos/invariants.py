"""What must hold after the chaos, and what is watched while it lasts.

The monitor samples the database every second during the run (order statuses, stock), because
some promises are about the way there, not the end: stock never negative, no order leaving a
final state. The checks at the end read the four services' schemas and the broker's queues and
compare them with each other and with what the harness did (fixtures, accepted orders, poison).
"""

import asyncio
import time
from collections import defaultdict

from broker import read_dead_letters
from stack import CommandFailed

TERMINAL = ("confirmed", "cancelled")
INVARIANTS = {
    "I1": "every accepted order exists and is confirmed or cancelled",
    "I2": "no order charged more than once (one payment per order; balances match captured payments)",
    "I3": "charges and refunds match the orders (cancelled+charged => refunded in full; confirmed => captured)",
    "I4": "stock never negative; stock moved = confirmed quantities; nothing left reserved",
    "I5": "exactly one notification per (order, kind), and the ones each final state calls for",
    "I6": "everything drains: outboxes published, work and retry queues empty, DLQs hold exactly the poison",
    "I7": "no older state applied after a newer one; final states agree across services",
}
SERVICE_SCHEMAS = ["orders", "inventory", "payments", "notifications"]
WORK_QUEUES = ["order", "inventory", "payment", "notification"]
EXAMPLES = 5


class Violations:
    def __init__(self):
        self.items = {key: [] for key in INVARIANTS}

    def add(self, invariant, example):
        self.items[invariant].append(example)

    def total(self):
        return sum(len(v) for v in self.items.values())

    def summary(self):
        return {key: {"count": len(v), "examples": v[:EXAMPLES]} for key, v in self.items.items()}


class Monitor:
    """Samples order statuses and stock once a second while the run is on."""

    # Rows changed this long before the previous sample are read again: a transaction's
    # updated_at is its start, and under faults a transaction may take seconds to commit.
    OVERLAP = "20 seconds"

    def __init__(self, stack, violations: Violations, cancel_requested):
        self.stack = stack
        self.violations = violations
        self.cancel_requested = cancel_requested  # order ids the harness asked to cancel
        self.statuses = {}  # order id -> (status, reason), as last seen
        self.samples = 0
        self.failed_samples = 0  # the database was away
        self.lowest_stock = {}  # sku -> (lowest available, lowest reserved) seen
        self.unpublished = None  # outbox rows of all services waiting for the relays, last seen
        self._since = None
        # One sample at a time, so each one sees a newer database than the one before: a stale
        # snapshot applied after a fresh one would look like an order going back in time.
        self._lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event):
        while not stop.is_set():
            await self.sample()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def sample(self, full=False):
        async with self._lock:
            await self._sample(full)

    async def _sample(self, full):
        since = "'-infinity'" if full or self._since is None else f"'{self._since}'::timestamptz - interval '{self.OVERLAP}'"
        try:
            rows = await self.stack.sql(
                "SELECT now() AS now,"
                " (SELECT json_agg(json_build_array(order_id, status, reason)) FROM orders.orders"
                f"  WHERE updated_at >= {since}) AS orders,"
                " (SELECT json_agg(json_build_array(sku, available, reserved)) FROM inventory.products) AS stock, "
                + " + ".join(f"(SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL)"
                             for schema in SERVICE_SCHEMAS) + " AS unpublished",
                timeout=10)
        except CommandFailed:
            self.failed_samples += 1
            return
        row = rows[0]
        self._since = row["now"]
        self.unpublished = row["unpublished"]
        self.samples += 1
        for order_id, status, reason in row["orders"] or []:
            self._observe(order_id, status, reason)
        for sku, available, reserved in row["stock"] or []:
            low_a, low_r = self.lowest_stock.get(sku, (available, reserved))
            self.lowest_stock[sku] = (min(low_a, available), min(low_r, reserved))
            if available < 0 or reserved < 0:
                self.violations.add("I4", f"{sku}: sampled available={available} reserved={reserved}")

    def _observe(self, order_id, status, reason):
        before = self.statuses.get(order_id)
        self.statuses[order_id] = (status, reason)
        if before is None or before == (status, reason) or before[0] not in TERMINAL:
            return
        # The one way out of a final state: the customer's cancel of a confirmed order.
        if before[0] == "confirmed" and (status, reason) == ("cancelled", "customer_cancelled") \
                and order_id in self.cancel_requested:
            return
        self.violations.add("I7", f"{order_id}: {before[0]}/{before[1]} -> {status}/{reason}")

    def terminal(self, order_ids):
        return sum(1 for o in order_ids if self.statuses.get(o, (None,))[0] in TERMINAL)


async def wait_until(predicate, timeout, pause=1.0):
    """Awaits `predicate()` until it is true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(pause)


async def queued(stack):
    """Messages waiting in (or being handled from) the work and retry queues."""
    return sum(ready + unacked for name, (ready, unacked) in (await stack.queues()).items()
               if name in WORK_QUEUES or ".retry." in name)


async def backlog(stack, expected_parked):
    """What is still to drain: unpublished outbox rows per schema and messages in the work and
    retry queues; also the dead-letter queues' depth against the poison injected. Empty when drained."""
    left = {}
    rows = await stack.sql(" UNION ALL ".join(
        f"SELECT '{schema}' AS schema, count(*) AS n FROM {schema}.outbox WHERE published_at IS NULL"
        for schema in SERVICE_SCHEMAS))
    for row in rows:
        if row["n"]:
            left[f"{row['schema']}.outbox"] = row["n"]
    for name, (ready, unacked) in (await stack.queues()).items():
        if name in WORK_QUEUES or ".retry." in name:
            if ready or unacked:
                left[name] = ready + unacked
        elif name.endswith(".dlq") and ready + unacked < expected_parked.get(name, 0):
            left[name] = f"{ready + unacked} of {expected_parked[name]} poison messages parked"
    return left


async def check(stack, violations: Violations, monitor: Monitor, accepted, late, fixtures, poison,
                cancel_requested):
    """The final checks, once the run has drained (or the wait for it gave up). `late`: accepted
    orders that were not final when the time allowed for that ran out."""
    await monitor.sample(full=True)
    orders = {r["order_id"]: r for r in await stack.sql(
        "SELECT order_id, customer_id, status, reason, total FROM orders.orders")}
    lines = await stack.sql("SELECT order_id, sku, quantity FROM orders.order_lines")
    payments = await stack.sql("SELECT order_id, customer_id, amount, status FROM payments.payments")
    accounts = {r["customer_id"]: r["balance"] for r in await stack.sql(
        "SELECT customer_id, balance FROM payments.accounts")}
    products = {r["sku"]: r for r in await stack.sql("SELECT sku, available, reserved FROM inventory.products")}
    reservations = {r["order_id"]: r["status"] for r in await stack.sql(
        "SELECT order_id, status FROM inventory.reservations")}
    notifications = await stack.sql(
        "SELECT order_id, kind, count(*) AS n FROM notifications.notifications GROUP BY order_id, kind")

    # I1: accepted orders exist and were final in time.
    for order_id in sorted(accepted):
        order = orders.get(order_id)
        if order is None:
            violations.add("I1", f"{order_id}: accepted, not in orders.orders")
        elif order["status"] not in TERMINAL:
            violations.add("I1", f"{order_id}: still {order['status']}")
        elif order_id in late:
            violations.add("I1", f"{order_id}: {order['status']} only after the deadline")

    # I2: one payment per order; the ledger of each customer.
    payments_of = defaultdict(list)
    for payment in payments:
        payments_of[payment["order_id"]].append(payment)
    for order_id, rows in payments_of.items():
        if len(rows) > 1:
            violations.add("I2", f"{order_id}: {len(rows)} payments")
    captured_by_customer = defaultdict(int)
    for payment in payments:
        if payment["status"] == "captured":
            captured_by_customer[payment["customer_id"]] += payment["amount"]
    for customer, initial in fixtures.balances.items():
        spent = initial - accounts.get(customer, initial)
        if spent != captured_by_customer[customer]:
            violations.add("I2", f"{customer}: balance went down by {spent}, captured payments total "
                                 f"{captured_by_customer[customer]}")

    # I3: charges and refunds against the orders.
    charged = refunded = confirmed_total = 0
    for order_id, order in orders.items():
        payment = (payments_of.get(order_id) or [None])[0]
        if payment and payment["status"] in ("captured", "refunded"):
            charged += payment["amount"]
        if payment and payment["status"] == "refunded":
            refunded += payment["amount"]
        if order["status"] == "confirmed":
            confirmed_total += order["total"]
            if not payment or payment["status"] != "captured" or payment["amount"] != order["total"]:
                violations.add("I3", f"{order_id}: confirmed, total {order['total']}, payment "
                                     f"{payment and (payment['status'], payment['amount'])}")
        elif order["status"] == "cancelled" and payment:
            if payment["status"] == "captured":
                violations.add("I3", f"{order_id}: cancelled ({order['reason']}) but charged {payment['amount']},"
                                     " not refunded")
            elif payment["status"] == "refunded" and payment["amount"] != order["total"]:
                violations.add("I3", f"{order_id}: refunded {payment['amount']} of a total of {order['total']}")
    if charged - refunded != confirmed_total:
        violations.add("I3", f"charged {charged} - refunded {refunded} = {charged - refunded}, "
                             f"confirmed orders total {confirmed_total}")

    # I4: stock. The samples were checked as they came; the database's own guard must be there.
    guards = " ".join(r["definition"] for r in await stack.sql(
        "SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = 'inventory.products'::regclass AND contype = 'c'"))
    for column in ("available", "reserved"):
        if f"({column} >= 0)" not in guards:
            violations.add("I4", f"inventory.products has no CHECK ({column} >= 0)")
    sold = defaultdict(int)
    for line in lines:
        if orders.get(line["order_id"], {}).get("status") == "confirmed":
            sold[line["sku"]] += line["quantity"]
    for sku, product in fixtures.products.items():
        final = products.get(sku)
        if final is None:
            violations.add("I4", f"{sku}: missing from inventory.products")
            continue
        if product["stock"] - final["available"] != sold[sku]:
            violations.add("I4", f"{sku}: stock {product['stock']} -> available {final['available']}, "
                                 f"but confirmed orders hold {sold[sku]}")
        if final["reserved"] != 0:
            violations.add("I4", f"{sku}: {final['reserved']} still reserved")
    for order_id, status in reservations.items():
        order = orders.get(order_id)
        if status == "reserved" and (order is None or order["status"] in TERMINAL):
            violations.add("I4", f"{order_id}: reservation still 'reserved', order "
                                 f"{order and order['status']}")

    # I5: notifications.
    kinds_of = defaultdict(set)
    for row in notifications:
        kinds_of[row["order_id"]].add(row["kind"])
        if row["n"] != 1:
            violations.add("I5", f"{row['order_id']}: {row['n']} notifications {row['kind']}")
    for order_id, order in orders.items():
        payment = (payments_of.get(order_id) or [None])[0]
        was_refunded = bool(payment and payment["status"] == "refunded")
        expected = set()
        if order["status"] == "confirmed":
            expected = {"order_confirmed"}
        elif order["status"] == "cancelled":
            expected = {"order_cancelled"} | ({"payment_refunded"} if was_refunded else set())
            if order_id in cancel_requested and order["reason"] == "customer_cancelled":
                expected.add("order_confirmed")  # the harness cancels only orders it saw confirmed
        got = kinds_of.get(order_id, set())
        if order["status"] in TERMINAL and got != expected:
            violations.add("I5", f"{order_id}: {order['status']}/{order['reason']}, notifications "
                                 f"{sorted(got)}, expected {sorted(expected)}")

    # I6: drained; dead-letter queues hold the poison and nothing else.
    expected_parked = await expected_dead_letters(stack, poison)
    for what, amount in (await backlog(stack, {})).items():
        violations.add("I6", f"{what}: {amount} left")
    dead_letter_queues = [f"{q}.dlq" for q in WORK_QUEUES]
    parked = await asyncio.get_running_loop().run_in_executor(
        None, read_dead_letters, stack.admin_amqp_url, dead_letter_queues)
    by_marker = {p["marker"]: p for p in poison}
    seen = defaultdict(list)  # marker -> [(queue, reason)]
    for queue, messages in parked.items():
        for headers in messages:
            marker = headers.get("x-chaos-poison")
            if marker not in by_marker:
                violations.add("I6", f"{queue}: a dead letter that is not our poison "
                                     f"(reason {headers.get('x-bazaar-reason')}: {str(headers.get('x-bazaar-error'))[:200]})")
                continue
            seen[marker].append((queue, headers.get("x-bazaar-reason")))
    duplicates = 0
    for marker, p in by_marker.items():
        queues = sorted(q for q, _ in seen[marker])
        if p["published"] and sorted(set(queues)) != expected_parked[marker]:
            violations.add("I6", f"poison {p['kind']} {marker}: parked in {queues or 'no queue'}, "
                                 f"expected {expected_parked[marker]}")
        duplicates += len(queues) - len(set(queues))  # at-least-once: a lost ack parks a copy twice
        for queue, reason in seen[marker]:
            if reason != p["reason"]:
                violations.add("I6", f"poison {p['kind']} {marker} in {queue}: reason {reason}, expected {p['reason']}")

    # I7: the services agree on each order's outcome (transitions were checked while sampling).
    for order_id, order in orders.items():
        payment = (payments_of.get(order_id) or [None])[0]
        captured = bool(payment and payment["status"] == "captured")
        sold_here = reservations.get(order_id) == "sold"
        if order["status"] == "confirmed" and not (captured and sold_here):
            violations.add("I7", f"{order_id}: confirmed, payment {payment and payment['status']}, "
                                 f"reservation {reservations.get(order_id)}")
        if order["status"] != "confirmed" and (captured or sold_here):
            violations.add("I7", f"{order_id}: {order['status']}/{order['reason']}, payment "
                                 f"{payment and payment['status']}, reservation {reservations.get(order_id)}")

    reasons = defaultdict(int)
    for order in orders.values():
        reasons[order["status"] if order["status"] != "cancelled" else f"cancelled/{order['reason']}"] += 1
    return {"orders_in_database": len(orders), "outcomes": dict(sorted(reasons.items())),
            "dead_letters": {q: len(m) for q, m in parked.items()}, "poison_parked_twice": duplicates,
            "lowest_stock_sampled": monitor.lowest_stock}


async def expected_dead_letters(stack, poison):
    """For each poison marker, the dead-letter queues it must end in: one per work queue its
    route reaches (bindings from the broker; the default exchange reaches the queue named)."""
    bindings = await stack.bindings()
    expected = {}
    for p in poison:
        if not p["published"]:
            expected[p["marker"]] = []  # every attempt failed: it may or may not be there
            continue
        if p["exchange"]:
            queues = {q for e, rk, q in bindings if e == p["exchange"] and rk == p["routing_key"]}
        else:
            queues = {p["queue"]}
        expected[p["marker"]] = sorted(f"{q}.dlq" for q in queues)
    return expected


def expected_depths(expected):
    """{dead-letter queue: how many poison messages it must hold}."""
    depths = defaultdict(int)
    for queues in expected.values():
        for queue in queues:
            depths[queue] += 1
    return dict(depths)
