"""Fixtures and open-loop load over the services' HTTP APIs.

Open loop: orders are sent at a fixed rate whatever the answers, as real customers do, so a slow
or absent instance can't slow the load down (and hide its own trouble). Requests run on a thread
pool; an order whose request fails (no answer, 5xx) is sent once more to the other order instance
with the same Idempotency-Key, so it is placed at most once either way.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

REQUEST_TIMEOUT = 5.0
CANCEL_SHARE = 0.05  # orders the customer cancels once they are confirmed (refunds, restocks)
SCARCE_SHARE = 0.10  # orders that ask for the scarce product (some end out_of_stock)
BROKE_SHARE = 0.03  # orders from customers without money (payment_declined)


def bearer_token(secret, subject, role, lifetime=6 * 3600):
    """A token as the services verify them (TokenAuthority in Shared/ServiceKit): a JWT signed with
    HMAC-SHA256 and the stack's AUTH_JWT_SECRET, naming its subject (a customer id, or admin), its
    role (customer or admin) and when it expires."""
    def encode(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    now = int(time.time())
    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = encode(json.dumps({"sub": subject, "role": role, "iat": now, "exp": now + lifetime}).encode())
    signature = encode(hmac.new(secret.encode(), header + b"." + claims, hashlib.sha256).digest())
    return (header + b"." + claims + b"." + signature).decode()


def http(method, url, token, body=None, headers=None, timeout=REQUEST_TIMEOUT):
    """(status, decoded JSON body or None); status is None when nothing answered in time."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", "authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None
    except (OSError, ValueError, HTTPException):
        # No answer, or one cut short (the service was killed mid-response): the caller retries,
        # on the other instance, with the same Idempotency-Key.
        return None, None


class Fixtures:
    """Products and accounts made for this run, with the starting values the checks compare to."""

    def __init__(self, orders, token_secret):
        plenty = max(2000, orders * 2)  # more than the orders can buy: only the scarce one runs out
        self.products = {
            "CHAOS-MUG": {"name": "Chaos mug", "price": 1250, "stock": plenty},
            "CHAOS-TEE": {"name": "Chaos T-shirt", "price": 2000, "stock": plenty},
            "CHAOS-STICKER": {"name": "Chaos stickers", "price": 300, "stock": plenty},
            "CHAOS-LAMP": {"name": "Chaos lamp (scarce)", "price": 4500, "stock": max(20, orders // 100)},
        }
        self.scarce = "CHAOS-LAMP"
        self.rich = [f"chaos-rich-{n:03d}" for n in range(200)]
        self.broke = ["chaos-broke-0", "chaos-broke-1"]
        self.balances = {c: 1_000_000_000 for c in self.rich} | {c: 0 for c in self.broke}
        # Customers place and cancel their own orders; products and accounts need the admin.
        self.tokens = {c: bearer_token(token_secret, c, "customer") for c in self.balances}
        self.admin_token = bearer_token(token_secret, "admin", "admin")

    def seed(self, inventory_urls, payment_urls):
        def put(urls, path, body):
            for url in urls:
                status, answer = http("PUT", url + path, self.admin_token, body)
                if status and 200 <= status < 300:
                    return
            raise RuntimeError(f"PUT {path} failed: {status} {answer}")

        for sku, product in self.products.items():
            put(inventory_urls, f"/products/{sku}", product)
        for customer, balance in self.balances.items():
            put(payment_urls, f"/accounts/{customer}", {"balance": balance})


class Load:
    def __init__(self, order_urls, fixtures: Fixtures, rng, run_id, workers):
        self.order_urls = order_urls
        self.fixtures = fixtures
        self.rng = rng
        self.run_id = run_id
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
        self.lock = threading.Lock()
        self.placed = 0  # requests started
        self.accepted = {}  # order id -> its customer
        self.rejected = 0  # a 4xx answer: the order was refused, not lost
        self.failed = {}  # no 2xx from either instance: the last answer's status ("none": no answer) -> count
        self.retried = 0
        self.cancel_candidates = []  # accepted ids to cancel once they are confirmed
        self.cancel_requested = set()
        self.cancel_answers = {}  # HTTP status -> count
        self._futures = []

    def _order(self, n):
        """The n-th order: drawn in the event loop (one thread) so a seed gives the same orders."""
        rng, fixtures = self.rng, self.fixtures
        customer = rng.choice(fixtures.broke) if rng.random() < BROKE_SHARE else rng.choice(fixtures.rich)
        plentiful = [sku for sku in fixtures.products if sku != fixtures.scarce]
        skus = rng.sample(plentiful, rng.randint(1, 2))
        if rng.random() < SCARCE_SHARE:
            skus.append(fixtures.scarce)
        items = [{"sku": sku, "quantity": 1 if sku == fixtures.scarce else rng.randint(1, 3)} for sku in skus]
        return {"customerId": customer, "items": items}, rng.random() < CANCEL_SHARE

    def _place(self, n, body, cancel):
        key = {"Idempotency-Key": f"chaos-{self.run_id}-{n}"}
        token = self.fixtures.tokens[body["customerId"]]
        first, second = self.order_urls[n % 2], self.order_urls[(n + 1) % 2]
        status, answer = http("POST", first + "/orders", token, body, key)
        if status is None or status >= 500:
            with self.lock:
                self.retried += 1
            status, answer = http("POST", second + "/orders", token, body, key)
        with self.lock:
            if status and 200 <= status < 300 and answer and "orderId" in answer:
                order_id = answer["orderId"].lower()
                self.accepted[order_id] = body["customerId"]
                if cancel:
                    self.cancel_candidates.append(order_id)
            elif status and 400 <= status < 500:
                self.rejected += 1
            else:
                key = str(status or "none")
                self.failed[key] = self.failed.get(key, 0) + 1

    async def drive(self, total, rate):
        """Starts `total` orders at `rate` per second; returns once every request has its answer."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(total):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body, cancel = self._order(n)
            self.placed += 1
            self._futures.append(loop.run_in_executor(self.pool, self._place, n, body, cancel))
        await asyncio.gather(*self._futures)

    def _cancel(self, order_id):
        status = None
        token = self.fixtures.tokens[self.accepted[order_id]]
        for url in self.order_urls:
            status, _ = http("POST", f"{url}/orders/{order_id}/cancel", token)
            if status is not None and status < 500:
                break
        with self.lock:
            self.cancel_answers[status] = self.cancel_answers.get(status, 0) + 1

    async def cancel_confirmed(self, statuses, stop: asyncio.Event):
        """Until `stop`: cancels the candidates the monitor has seen confirmed (once each)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with self.lock:
                ready = [o for o in self.cancel_candidates
                         if o not in self.cancel_requested and statuses.get(o, (None,))[0] == "confirmed"]
                self.cancel_requested.update(ready)
            await asyncio.gather(*(loop.run_in_executor(self.pool, self._cancel, o) for o in ready))
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def close(self):
        self.pool.shutdown(wait=True)
