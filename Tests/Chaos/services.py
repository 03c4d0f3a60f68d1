"""Two instances of every service, each behind its own proxies, kept running by a supervisor.

(The benchmark, Tests/Bench, uses the same fleet with one instance per service, no proxies and the
services' default settings: see `Fleet`'s parameters.)

The supervisor plays the part of an orchestrator's restart policy: an instance that exits while
the run is on (crashed at a fault-injection point, killed by the harness, failed to start while
the broker was away) is started again half a second later, with the same settings.
"""

import asyncio
import os
import signal
import socket
import time
import urllib.parse
import urllib.request
from http.client import HTTPException

from proxy import Proxy

SERVICES = ["order", "inventory", "payment", "notification"]
INSTANCES_PER_SERVICE = 2
CRASH_POINTS = ["relay.before-publish", "relay.before-confirm", "relay.before-mark-published",
                "consumer.before-commit", "consumer.before-ack"]
RESTART_PAUSE = 0.5


def through(url, port, query=""):
    """`url` (a service's own, from stack.env) with the proxy's address instead of the server's
    (or, when `port` is None, its own address), and `query` as its query string."""
    parts = urllib.parse.urlsplit(url)
    credentials, address = parts.netloc.rsplit("@", 1)
    netloc = f"{credentials}@127.0.0.1:{port}" if port is not None else f"{credentials}@{address}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def free_port(start):
    """The first port from `start` on that nothing listens on."""
    port = start
    while True:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                port += 1


class Instance:
    def __init__(self, service, index, http_port, binary, log_path, stack_settings, amqp_proxy: Proxy | None,
                 pg_proxy: Proxy | None, overrides=None):
        self.service = service
        self.stack_settings = stack_settings
        self.name = f"{service}-{index}"
        self.http_port = http_port
        self.binary = binary
        self.log_path = log_path
        self.amqp_proxy = amqp_proxy
        self.pg_proxy = pg_proxy
        # Settings that replace the chaos suite's (None: leave the variable unset, so the
        # service's default applies).
        self.overrides = overrides or {}
        self.faults = ""  # BAZAAR_FAULTS for the next start
        self.process = None
        self.starts = 0
        self.started_at = None  # time.monotonic() of the last start
        self.ready_seconds = None  # from the last start to its first /health/ready 200
        self.restart_planned = False  # the coming exit is the harness's doing, not a failure

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def proxies(self):
        return [p for p in (self.amqp_proxy, self.pg_proxy) if p is not None]

    def environment(self):
        # As scripts/services.sh runs a service: as its own broker user and database role, which
        # may declare nothing on the broker (stack.sh loaded the whole topology), with the key of
        # the API's bearer tokens.
        own = self.stack_settings
        env = dict(
            os.environ,
            HTTP_PORT=str(self.http_port),
            INSTANCE_NAME=self.name,
            # heartbeat=2: a silent broker (or a cut link) is noticed within seconds, not minutes.
            AMQP_URL=through(own[f"{self.service.upper()}_AMQP_URL"], self.amqp_proxy and self.amqp_proxy.port,
                             "heartbeat=2"),
            # On loopback, TLS would only cost CPU (1-2% of the database's, more of the services').
            DATABASE_URL=through(own[f"{self.service.upper()}_DATABASE_URL"], self.pg_proxy and self.pg_proxy.port,
                                 "sslmode=disable"),
            AMQP_DECLARE_TOPOLOGY="none",
            AUTH_JWT_SECRET=own["AUTH_JWT_SECRET"],
            CONSUMERS="2",
            DATABASE_POOL_SIZE="4",
            LOG_LEVEL="info",
            BAZAAR_FAULTS=self.faults,
            # The crashes are on purpose, their backtraces say nothing. And the Swift backtracer,
            # which a crashing process spawns, inherits its sockets: seen hanging past its own
            # timeout while holding the HTTP port, so that no restart could bind it.
            SWIFT_BACKTRACE="enable=no",
        )
        if self.service == "order":
            env["ORDER_PENDING_TIMEOUT_SECONDS"] = "30"
        for key, value in self.overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    async def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f"==== chaos: starting {self.name} (start #{self.starts + 1}) at {time.strftime('%H:%M:%S')}"
                      f" BAZAAR_FAULTS={self.faults or '-'}\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                self.binary, env=self.environment(), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        self.started_at = time.monotonic()
        self.ready_seconds = None
        self.starts += 1

    def signal(self, signum):
        if self.process and self.process.returncode is None:
            try:
                os.kill(self.process.pid, signum)
                return True
            except ProcessLookupError:
                pass
        return False

    def kill_leftovers(self):
        """Kills what the last process left in its process group (it ran in a session of its
        own): nothing normally, but a helper it spawned must not outlive it holding its ports."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def is_ready(self):
        try:
            with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as response:
                return response.status == 200
        except (OSError, HTTPException):  # HTTPException: an answer cut short (the process died)
            return False


class Fleet:
    """The eight instances, their proxies and the supervisor (by default; the parameters after
    `pg_port` let the benchmark run one direct instance of each with settings of its own)."""

    def __init__(self, bin_dir, log_dir, stack_settings, amqp_port, pg_port,
                 instances_per_service=INSTANCES_PER_SERVICE, proxied=True, first_http_port=18080, overrides=None,
                 ready_poll=0.5):
        self.instances = []
        self.restarts = 0  # unplanned: crashes, kills, failed starts
        self.planned_restarts = 0
        self.running = False
        self._crashes = {point: 0 for point in CRASH_POINTS}
        self._log_offsets = {}
        self._tasks = []
        self.instances_per_service = instances_per_service
        self.ready_poll = ready_poll  # seconds between readiness probes while waiting
        http_port = first_http_port
        for service in SERVICES:
            for index in range(1, instances_per_service + 1):
                http_port = free_port(http_port)
                name = f"{service}-{index}"
                self.instances.append(Instance(
                    service, index, http_port, os.path.join(bin_dir, f"{service}-service"),
                    os.path.join(log_dir, f"{name}.log"), stack_settings,
                    Proxy(amqp_port) if proxied else None, Proxy(pg_port) if proxied else None, overrides))
                http_port += 1

    def of(self, service):
        return [i for i in self.instances if i.service == service]

    def proxies(self):
        return [p for i in self.instances for p in i.proxies]

    async def start(self, faults, ready_timeout=90.0):
        for proxy in self.proxies():
            await proxy.start()
        for instance in self.instances:
            instance.faults = faults
            await instance.start()
        self.running = True
        self._tasks = [asyncio.create_task(self._supervise(i)) for i in self.instances]
        await self.wait_ready(self.instances, ready_timeout)

    async def wait_ready(self, instances, timeout):
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        waiting = list(instances)
        while waiting:
            results = await asyncio.gather(*(loop.run_in_executor(None, i.is_ready) for i in waiting))
            now = time.monotonic()
            for instance, ready in zip(waiting, results):
                if ready and instance.ready_seconds is None and instance.started_at is not None:
                    instance.ready_seconds = now - instance.started_at
            waiting = [i for i, ready in zip(waiting, results) if not ready]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError("not ready within %.0f s: %s (see their logs in the run folder's logs/)"
                                   % (timeout, ", ".join(i.name for i in waiting)))
            if waiting:
                await asyncio.sleep(self.ready_poll)

    async def _supervise(self, instance):
        while self.running:
            await instance.process.wait()
            instance.kill_leftovers()
            if not self.running:
                return
            await asyncio.sleep(RESTART_PAUSE)
            if not self.running:
                return
            if instance.restart_planned:
                instance.restart_planned = False
                self.planned_restarts += 1
            else:
                self.restarts += 1
            await instance.start()

    async def disarm(self):
        """Restarts every instance without fault injection, one instance of each service at a
        time so that every service keeps one instance running: after this, no crash point fires."""
        for index in range(1, self.instances_per_service + 1):
            wave = [i for i in self.instances if i.name.endswith(f"-{index}")]
            starts = {i.name: i.starts for i in wave}
            for instance in wave:
                instance.faults = ""
                instance.restart_planned = True
                instance.signal(signal.SIGCONT)
                instance.signal(signal.SIGTERM)
            # The supervisor starts each again once it has exited; then wait for it to answer.
            deadline = time.monotonic() + 30
            while any(i.starts == starts[i.name] for i in wave) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await self.wait_ready(wave, 60.0)

    async def stop(self):
        self.running = False
        for task in self._tasks:
            task.cancel()
        for instance in self.instances:
            instance.signal(signal.SIGCONT)
            instance.signal(signal.SIGTERM)
        for instance in self.instances:
            if instance.process and instance.process.returncode is None:
                try:
                    await asyncio.wait_for(instance.process.wait(), 15)
                except asyncio.TimeoutError:
                    instance.signal(signal.SIGKILL)
                    await instance.process.wait()
            if instance.process:
                instance.kill_leftovers()
        for proxy in self.proxies():
            await proxy.close()

    def crash_counts(self):
        """Crashes per fault-injection point, read from what the logs gained since the last call."""
        marker = "fault injection: crashing at "
        for instance in self.instances:
            try:
                with open(instance.log_path, "rb") as log:
                    log.seek(self._log_offsets.get(instance.name, 0))
                    text = log.read()
                    # Keep a partly written last line for the next call.
                    complete = text.rfind(b"\n") + 1
                    self._log_offsets[instance.name] = log.tell() - (len(text) - complete)
            except OSError:
                continue
            for line in text[:complete].decode(errors="replace").splitlines():
                if marker in line:
                    point = line.split(marker, 1)[1].strip()
                    self._crashes[point] = self._crashes.get(point, 0) + 1
        return dict(self._crashes)
