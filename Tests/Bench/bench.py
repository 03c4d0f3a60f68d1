#!/usr/bin/env python3
"""The benchmark (`make bench`): what this machine can do, and what Bazaar does with it.

In one run, on a stack of its own (scripts/stack.sh pointed at .run/bench, AMQP on 5693,
PostgreSQL on 5453) and one instance of each service with its default settings:
  1. raw capacity through the project's own AMQP and Postgres modules (`bazaar bench raw`):
     confirmed publishing in the relay's batches, consume-and-ack at the consumers' prefetch, the
     saga-step transaction through a pool; and pgbench running the same transaction
     (Tests/Bench/saga-step.sql) with 16 clients and with 1;
  2. the whole system under open-loop load (`bazaar load`) at a ladder of arrival rates, until
     the first rate it cannot sustain: completed orders per second, latency from POST /orders to
     the order's final state, CPU seconds per order of every process, services' memory;
  3. the most relevant rate again (the highest sustained one up to 250/s) once every service's
     inbox and outbox hold a million old rows, to show that cost does not grow with history.
It prints a table, writes .run/bench/results.json and, with --write-docs, docs/bench/ (results
as JSON and Markdown, a throughput-latency chart) and the table in README.md. Timings are
reported, never asserted: the targets are printed with what was measured.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Chaos"))
sys.path.insert(0, str(HERE))

import processes  # noqa: E402
import report  # noqa: E402
from services import SERVICES, Fleet  # noqa: E402
from stack import PG_BIN, CommandFailed, Stack, run  # noqa: E402

AMQP_PORT = 5693
PG_PORT = 5453
FIRST_HTTP_PORT = 18180
SCHEMAS = {"order": "orders", "inventory": "inventory", "payment": "payments", "notification": "notifications"}
RAW_SCHEMA = "bench_raw"
# The chaos suite's settings that would change what is measured: unset, so each service runs with
# its defaults (CONSUMERS 1, DATABASE_POOL_SIZE 8, the order deadline of the saga).
SERVICE_DEFAULTS = {"CONSUMERS": None, "DATABASE_POOL_SIZE": None, "ORDER_PENDING_TIMEOUT_SECONDS": None}
# 550 decides the throughput target: a step's rate counts the drain after its last arrival, so the
# 500 step reads a little under 500 however well it goes.
DEFAULT_RATES = [50, 100, 150, 200, 250, 300, 400, 500, 550, 650]
SUSTAINED_SHARE = 0.9  # a rate is sustained when this share of it completes, and every order settles
RELEVANT_RATE = 250  # the history step runs at the highest sustained rate up to this one
PROFILES = {
    "full": dict(rates=DEFAULT_RATES, duration=20, history_rows=1_000_000, pgbench_seconds=10, raw_messages=20_000,
                 transaction_seconds=5),
    "quick": dict(rates=[50, 100, 200], duration=8, history_rows=100_000, pgbench_seconds=4, raw_messages=5_000,
                  transaction_seconds=2),
}


class StepFailed(Exception):
    pass


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: Tests/Bench/bench.py --bin-dir .build-release/release --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True,
                        help="folder of the release binaries: the four *-service (and bazaar, unless --bazaar)")
    parser.add_argument("--bazaar", help="the bazaar binary (default: the one in --bin-dir)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of a few minutes: rates 50,100,200 for 8 s, 100,000 old rows")
    parser.add_argument("--rates", type=lambda text: [float(r) for r in text.split(",")],
                        help="the ladder of arrival rates, orders/s, comma-separated (default 50,...,650)")
    parser.add_argument("--duration", type=float, help="seconds of load at each rate (default 20)")
    parser.add_argument("--history-rows", type=int, help="old rows put in every inbox and outbox (default 1,000,000)")
    parser.add_argument("--history-rate", type=float,
                        help="the rate of the history step (default: the highest sustained rate up to 250/s)")
    parser.add_argument("--pgbench-seconds", type=int, help="seconds of each pgbench run (default 10)")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/bench/ (results.json, results.md, throughput-latency.svg) "
                             "and the table in README.md")
    parser.add_argument("--keep-stack", action="store_true",
                        help="leave the stack and the services running at the end (to look around)")
    arguments = parser.parse_args()
    profile = PROFILES["quick" if arguments.quick else "full"]
    for key, value in profile.items():
        if getattr(arguments, key, None) is None:
            setattr(arguments, key, value)
    return arguments


class Bench:
    def __init__(self, arguments):
        self.arguments = arguments
        self.bin_dir = Path(arguments.bin_dir).resolve()
        self.bazaar = Path(arguments.bazaar).resolve() if arguments.bazaar else self.bin_dir / "bazaar"
        self.stack = Stack(REPO, name="bench", amqp_port=AMQP_PORT, pg_port=PG_PORT)
        self.fleet = None
        self.postmaster = None
        self.started = time.monotonic()
        self.results = {
            "version": 1,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "loadAverageAtStart": [round(x, 2) for x in os.getloadavg()]},
            "settings": {"rates": arguments.rates, "durationSeconds": arguments.duration,
                         "historyRows": arguments.history_rows, "pgbenchSeconds": arguments.pgbench_seconds,
                         "quick": arguments.quick, "instancesPerService": 1},
        }

    def log(self, message):
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    # -- the whole run -----------------------------------------------------------------------

    async def main(self):
        for binary in [self.bin_dir / f"{s}-service" for s in SERVICES] + [self.bazaar]:
            if not binary.is_file():
                raise StepFailed(f"{binary} is missing: `make bench` builds it")
        try:
            self.log(f"starting a fresh stack in {self.stack.run_dir} (AMQP {AMQP_PORT}, PostgreSQL {PG_PORT})")
            await self.stack.fresh()
            self.postmaster = processes.postmaster_pid(self.stack.pg_paths()[0])
            await self.measure_raw()
            await self.start_services("readiness")
            await self.measure_idle_memory()
            await self.climb_ladder()
            await self.measure_with_history()
        finally:
            await self.stop()
        self.results["finishedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.results["targets"] = report.targets(self.results)
        self.write_results()

    async def stop(self):
        if self.arguments.keep_stack:
            self.log(f"leaving the stack and services running (--keep-stack): BAZAAR_RUN_DIR={self.stack.run_dir}")
            return
        if self.fleet:
            await self.fleet.stop()
        try:
            await self.stack.down()
        except CommandFailed as error:
            self.log(f"stopping the stack: {error}")

    # -- 1. raw capacity -----------------------------------------------------------------------

    async def measure_raw(self):
        self.log("raw capacity through the AMQP and Postgres modules (bazaar bench raw)")
        _, out, _ = await run(
            str(self.bazaar), "bench", "raw", "--json", "--keep-schema", "--schema", RAW_SCHEMA,
            "--messages", str(self.arguments.raw_messages),
            "--transaction-seconds", str(self.arguments.transaction_seconds),
            env=self.cli_env(), timeout=600)
        raw = json.loads(out)
        self.log(f"  confirmed publish {raw['confirmedPublish']['perSecond']:.0f} msg/s, consume and ack "
                 f"{raw['consumeAndAck']['perSecond']:.0f} msg/s, saga step "
                 + ", ".join(f"{t['perSecond']:.0f} tx/s × {t['concurrency']}" for t in raw["sagaStep"]))
        raw["pgbench"] = []
        for clients, threads in [(16, 2), (1, 1)]:
            self.log(f"pgbench: the saga-step transaction, {clients} client(s), {self.arguments.pgbench_seconds} s")
            raw["pgbench"].append(await self.pgbench(clients, threads))
            self.log(f"  {raw['pgbench'][-1]['tps']:.0f} tx/s, {raw['pgbench'][-1]['latencyMs']:.2f} ms average")
        await self.stack.execute(f"DROP SCHEMA {RAW_SCHEMA} CASCADE")
        self.results["raw"] = raw

    async def pgbench(self, clients, threads):
        env = dict(os.environ, PGOPTIONS=f"-c search_path={RAW_SCHEMA}")
        _, out, _ = await run(
            str(PG_BIN / "pgbench"), "-n", "-M", "extended", "-D", "products=100", "-f", str(HERE / "saga-step.sql"),
            "-c", str(clients), "-j", str(threads), "-T", str(self.arguments.pgbench_seconds),
            self.stack.admin_database_url, env=env, timeout=self.arguments.pgbench_seconds + 120)
        figures = {"clients": clients, "threads": threads, "seconds": self.arguments.pgbench_seconds}
        for line in out.splitlines():
            if line.startswith("tps = "):
                figures["tps"] = float(line.split()[2])
            elif line.startswith("latency average = "):
                figures["latencyMs"] = float(line.split()[3])
            elif line.startswith("number of transactions actually processed: "):
                figures["transactions"] = int(line.split(": ")[1].split("/")[0])
        if "tps" not in figures:
            raise StepFailed(f"pgbench printed no tps: {out[-500:]}")
        return figures

    # -- the services --------------------------------------------------------------------------

    def cli_env(self):
        """`bazaar`'s environment: the bench stack's stack.env, and the services' addresses."""
        env = dict(os.environ, BAZAAR_RUN_DIR=str(self.stack.run_dir))
        if self.fleet:
            for instance in self.fleet.instances:
                env[f"{instance.service.upper()}_URL"] = instance.url
        return env

    async def start_services(self, label):
        log_dir = self.stack.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.fleet = Fleet(str(self.bin_dir), str(log_dir), self.stack.settings, AMQP_PORT, PG_PORT,
                           instances_per_service=1, proxied=False, first_http_port=FIRST_HTTP_PORT,
                           overrides=SERVICE_DEFAULTS, ready_poll=0.02)
        self.log("starting the four services (one instance each, default settings)")
        await self.fleet.start("", ready_timeout=60)
        readiness = {i.service: round(i.ready_seconds, 3) for i in self.fleet.instances}
        self.results[label] = readiness
        self.log("  ready after " + ", ".join(f"{s} {t:.2f} s" for s, t in readiness.items())
                 + " (started together; spawn to the first /health/ready 200)")

    def service_pids(self):
        return {i.service: i.process.pid for i in self.fleet.instances}

    async def measure_idle_memory(self):
        await asyncio.sleep(3)
        idle = {service: round(processes.rss_mib(pid) or 0, 1) for service, pid in self.service_pids().items()}
        self.results["rssMiB"] = {"idle": idle}
        self.log("  idle memory (RSS): " + ", ".join(f"{s} {m:.1f} MiB" for s, m in idle.items()))

    # -- 2. the ladder -------------------------------------------------------------------------

    async def climb_ladder(self):
        ladder = []
        for rate in self.arguments.rates:
            step = await self.load_step(rate, f"{rate:g}/s")
            ladder.append(step)
            if not step["sustained"]:
                self.log(f"  {rate:g}/s is not sustained: the ladder stops here")
                break
        self.results["ladder"] = ladder
        sustained = [s for s in ladder if s["sustained"]]
        self.results["sustainedRate"] = max((s["rate"] for s in sustained), default=None)
        self.results["maxThroughput"] = max((s["completedPerSecond"] for s in ladder if s.get("load")), default=0)
        self.results["rssMiB"]["atHighestRate"] = ladder[-1]["rssMiBMax"] if ladder else {}
        self.results["deadLetters"] = await self.dead_letters()

    def cpu_snapshot(self):
        """CPU seconds so far of each process of the system (the load generator is counted apart)."""
        snapshot = {service: processes.cpu_seconds(pid) for service, pid in self.service_pids().items()}
        snapshot["rabbitmq"] = sum(processes.cpu_seconds(pid, waited_children=True)
                                   for pid in self.stack.broker_pids())
        snapshot["postgres"] = processes.cluster_cpu_seconds(self.postmaster)
        return snapshot

    async def counters(self):
        """Rows inserted into the services' outboxes and inboxes, the database's commits, the WAL
        written (bytes, full-page images) and the checkpointer's work, so far. (Statistics a
        backend flushes within about a second of going idle: read after a pause.)"""
        schemas = ", ".join(f"'{s}'" for s in SCHEMAS.values())
        rows = await self.stack.sql(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits, "
            f"(SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'outbox' AND schemaname IN ({schemas})) AS outbox, "
            f"(SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'inbox' AND schemaname IN ({schemas})) AS inbox, "
            "(SELECT wal_bytes FROM pg_stat_wal) AS wal_bytes, (SELECT wal_fpi FROM pg_stat_wal) AS wal_fpi, "
            "(SELECT buffers_checkpoint FROM pg_stat_bgwriter) AS checkpoint_buffers, "
            "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints")
        return {key: int(value) for key, value in rows[0].items()}

    async def load_step(self, rate, label):
        """`bazaar load` at `rate` for the run's duration, and what it cost each process."""
        duration = self.arguments.duration
        self.log(f"load {label} for {duration:g} s (bazaar load, open loop)")
        await self.quiesce()
        await asyncio.sleep(1.5)
        counters_before = await self.counters()
        database_clock_before = (await self.stack.sql("SELECT now() AS now"))[0]["now"]
        cpu_before = self.cpu_snapshot()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss_max = {service: 0.0 for service in SERVICES}
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            str(self.bazaar), "load", "--rate", f"{rate:g}", "--duration", f"{duration:g}s", "--json",
            "--settle-timeout", str(int(max(30, duration * 2))), env=self.cli_env(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        watcher = asyncio.create_task(self.watch(started, cpu_before, rss_max))
        out, err = await process.communicate()
        watcher.cancel()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_after = self.cpu_snapshot()
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.5)
        counters_after = await self.counters()
        hops = await self.saga_hops(database_clock_before)

        step = {"rate": rate, "label": label, "exitCode": process.returncode, "elapsedSeconds": round(elapsed, 2),
                "rssMiBMax": {service: round(value, 1) for service, value in rss_max.items()},
                "unplannedRestarts": self.fleet.restarts}
        try:
            load = json.loads(out)
        except ValueError:
            step.update(load=None, sustained=False, error=(err or out).decode(errors="replace").strip()[-800:])
            self.log(f"  bazaar load failed: {step['error']}")
            return step
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        cpu["load generator"] = (children_after.ru_utime + children_after.ru_stime
                                 - children_before.ru_utime - children_before.ru_stime)
        settled = max(load["settled"], 1)
        # Completed per second of the whole step, from the first order's schedule to the last
        # one's settling: bazaar load's own throughput divides by the placing time only, which
        # hides a backlog that settles long after the last order was placed.
        completed = load["settled"] / max(load["elapsedSeconds"], 0.001)
        seconds = max(load["placingSeconds"], 0.001)
        delta = {key: counters_after[key] - counters_before[key] for key in counters_after}
        step.update(
            load=load,
            completedPerSecond=round(completed, 1),
            sustained=(load["failed"] == 0 and load["settled"] == load["placed"]
                       and completed >= SUSTAINED_SHARE * rate),
            cpuSeconds={name: round(value, 2) for name, value in cpu.items()},
            cpuMsPerOrder={name: round(1000 * value / settled, 2) for name, value in cpu.items()},
            cpuMsPerOrderTotal=round(1000 * sum(cpu.values()) / settled, 2),
            cpuUtilisation=round(sum(cpu.values()) / elapsed / (os.cpu_count() or 1), 3),
            eventsPerOrder=round(delta["outbox"] / settled, 2),
            deliveriesPerOrder=round(delta["inbox"] / settled, 2),
            publishedPerSecond=round(delta["outbox"] / seconds, 1),
            consumedPerSecond=round(delta["inbox"] / seconds, 1),
            commitsPerSecond=round(delta["commits"] / elapsed, 1),
            commitsPerOrder=round(delta["commits"] / settled, 1),
            # A checkpoint that runs during a step writes pages back beside it, and after it every
            # page's first change logs the whole page: more WAL to flush at each commit.
            walKiBPerOrder=round(delta["wal_bytes"] / 1024 / settled, 1),
            fullPageImagesPerOrder=round(delta["wal_fpi"] / settled, 2),
            checkpointBuffersWritten=delta["checkpoint_buffers"],
            checkpointsCompleted=delta["checkpoints"],
            sagaHopsMs=hops,
        )
        self.log(f"  {completed:.1f} orders/s completed of {rate:g} offered, {load['settled']}/{load['placed']}"
                 f" settled, {load['failed']} failed; placed→settled p50 {load['placedToSettledMs']['p50']} ms, p99"
                 f" {load['placedToSettledMs']['p99']} ms; POST p99 {load['postOrdersMs']['p99']} ms;"
                 f" {step['cpuMsPerOrderTotal']} CPU ms/order; WAL {step['walKiBPerOrder']} KiB/order,"
                 f" checkpointer wrote {delta['checkpoint_buffers']} buffers")
        if hops:
            self.log("  hop by hop, p50: " + ", ".join(f"{report.hop_label(event)} {hops[event]['p50']} ms"
                                                       for event in report.SAGA_HOPS))
        return step

    async def saga_hops(self, since):
        """Where a confirmed order's time went between its saga's transactions, by the database's
        clock: from the transaction that placed it to inventory's (OrderPlaced), from inventory's to
        payment's (StockReserved), from payment's to the order service's (PaymentCaptured).

        Each service records `now()`, its transaction's start, as the order's `created_at` or the
        inbox row's `received_at`, so a hop is the step's own statements and commit, the hand-over
        to its relay, the broker's enqueue and delivery, and the next consumer picking it up; p50,
        p90 and p99 of each, for the orders placed since `since`."""
        inbox = {event: f"(SELECT min(received_at) FROM {SCHEMAS[consumer]}.inbox"
                        f" WHERE correlation_id = o.order_id AND event_type = '{event}')"
                 for event, (_, consumer) in report.SAGA_HOPS.items()}
        columns = ", ".join(
            f"percentile_cont(array[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY \"{event}\") AS \"{event}\""
            for event in report.SAGA_HOPS)
        rows = await self.stack.sql(f"""
            WITH stamps AS (
                SELECT o.created_at AS placed, {inbox['OrderPlaced']} AS reserving,
                       {inbox['StockReserved']} AS paying, {inbox['PaymentCaptured']} AS confirming
                FROM {SCHEMAS['order']}.orders o
                WHERE o.created_at >= '{since}'::timestamptz AND o.status = 'confirmed'),
            hops AS (
                SELECT extract(epoch FROM reserving - placed) * 1000 AS "OrderPlaced",
                       extract(epoch FROM paying - reserving) * 1000 AS "StockReserved",
                       extract(epoch FROM confirming - paying) * 1000 AS "PaymentCaptured",
                       extract(epoch FROM confirming - placed) * 1000 AS total
                FROM stamps WHERE confirming IS NOT NULL)
            SELECT count(*) AS orders, {columns},
                   percentile_cont(array[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY total) AS total
            FROM hops""", timeout=60)
        row = rows[0]
        if not row["orders"]:
            return None

        def quantiles(values):
            return {name: round(value, 2) for name, value in zip(["p50", "p90", "p99"], values)}
        return {"orders": row["orders"], "total": quantiles(row["total"]),
                **{event: quantiles(row[event]) for event in report.SAGA_HOPS}}

    async def watch(self, started, cpu_before, rss_max):
        """While a step runs: the services' peak memory every second, a progress line every 5 s."""
        ticks = 0
        while True:
            await asyncio.sleep(1)
            ticks += 1
            for service, pid in self.service_pids().items():
                rss_max[service] = max(rss_max[service], processes.rss_mib(pid) or 0)
            if ticks % 5 == 0:
                elapsed = time.monotonic() - started
                now = self.cpu_snapshot()
                busy = ", ".join(f"{name} {100 * (now[name] - cpu_before[name]) / elapsed:.0f}%" for name in now)
                self.log(f"  … {elapsed:.0f} s: CPU {busy}")

    async def quiesce(self, timeout=180):
        """Waits until no order is pending and every queue is empty: what one step left behind
        (a saturated one, above all) must not be counted in the next."""
        deadline = time.monotonic() + timeout
        while True:
            pending = (await self.stack.sql("SELECT count(*) AS n FROM orders.orders WHERE status = 'pending'"))[0]["n"]
            # Dead letters stay where they are (none is expected: they are reported at the end).
            queued = sum(ready + unacked for name, (ready, unacked) in (await self.stack.queues()).items()
                         if not name.endswith(".dlq"))
            if pending == 0 and queued == 0:
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"the system did not settle within {timeout} s: {pending} orders pending, "
                                 f"{queued} messages in queues")
            self.log(f"  waiting for the system to settle: {pending} orders pending, {queued} messages queued")
            await asyncio.sleep(2)

    async def dead_letters(self):
        """Messages parked in the services' dead-letter queues: a correct run has none."""
        return {name: ready + unacked for name, (ready, unacked) in (await self.stack.queues()).items()
                if name.endswith(".dlq") and ready + unacked}

    # -- 3. with history -------------------------------------------------------------------------

    async def measure_with_history(self):
        ladder = self.results["ladder"]
        sustained = [s["rate"] for s in ladder if s["sustained"] and s["rate"] <= RELEVANT_RATE]
        rate = self.arguments.history_rate or (max(sustained) if sustained else self.arguments.rates[0])
        empty = next((s for s in ladder if s["rate"] == rate and s.get("load")), None)
        rows = self.arguments.history_rows
        await self.quiesce()
        self.log(f"stopping the services to put {rows:,} old rows in every inbox and outbox")
        await self.fleet.stop()
        inserting = time.monotonic()
        for service, schema in SCHEMAS.items():
            self.log(f"  {schema}: inserting {rows:,} outbox and {rows:,} inbox rows, a day old")
            await self.stack.execute(history_sql(schema, service, rows), timeout=1800)
        insert_seconds = time.monotonic() - inserting
        self.log(f"  inserted in {insert_seconds:.0f} s; VACUUM ANALYZE, then CHECKPOINT")
        for schema in SCHEMAS.values():
            await self.stack.execute(f"VACUUM ANALYZE {schema}.outbox", timeout=1800)
            await self.stack.execute(f"VACUUM ANALYZE {schema}.inbox", timeout=1800)
        # The bulk insert and the VACUUM write gigabytes of WAL; without a checkpoint of our own, the
        # ones they trigger would still be writing back pages during the step, and the step would
        # measure how history was loaded rather than what holding it costs.
        await self.stack.execute("CHECKPOINT", timeout=1800)
        await self.start_services("readinessWithHistory")
        step = await self.load_step(rate, f"{rate:g}/s with history")
        history = {"rows": rows, "insertSeconds": round(insert_seconds, 1), "rate": rate, "step": step}
        if empty and step.get("load"):
            history["throughputRatio"] = round(step["completedPerSecond"] / max(empty["completedPerSecond"], 0.001), 3)
            history["p50Ratio"] = round(step["load"]["placedToSettledMs"]["p50"]
                                        / max(empty["load"]["placedToSettledMs"]["p50"], 0.001), 2)
            history["p99Ratio"] = round(step["load"]["placedToSettledMs"]["p99"]
                                        / max(empty["load"]["placedToSettledMs"]["p99"], 0.001), 2)
            history["cpuRatio"] = round(step["cpuMsPerOrderTotal"] / max(empty["cpuMsPerOrderTotal"], 0.001), 2)
        self.results["history"] = history

    # -- output ----------------------------------------------------------------------------------

    def write_results(self):
        text = json.dumps(self.results, indent=2) + "\n"
        (self.stack.run_dir / "results.json").write_text(text)
        print()
        print(report.table(self.results))
        print(f"\nresults: {self.stack.run_dir / 'results.json'}")
        if self.arguments.write_docs:
            docs = REPO / "docs" / "bench"
            docs.mkdir(parents=True, exist_ok=True)
            (docs / "results.json").write_text(text)
            markdown = report.markdown(self.results)
            (docs / "results.md").write_text(markdown)
            (docs / "throughput-latency.svg").write_text(report.svg(self.results))
            report.update_readme(REPO / "README.md", self.results)
            print(f"docs: {docs}/results.json, results.md, throughput-latency.svg; README.md's table (commit them"
                  " if this run is one to keep)")


def history_sql(schema, service, rows):
    """`rows` published outbox rows and `rows` inbox rows, all a day old: older than any step's,
    younger than the retention (a week by default), so the services keep them. (psql runs the
    statements of one -c in one transaction.)"""
    payload = '{"data":"' + "x" * 380 + '"}'
    return f"""
        INSERT INTO {schema}.outbox (event_id, event_type, event_version, exchange, routing_key, correlation_id,
                                     payload, created_at, published_at)
        SELECT gen_random_uuid(), 'bench.history', 1, '{service}', 'bench.history.v1', gen_random_uuid(),
               '{payload}'::json, now() - interval '1 day', now() - interval '1 day'
        FROM generate_series(1, {rows});
        INSERT INTO {schema}.inbox (event_id, event_type, event_version, source, correlation_id, occurred_at,
                                    received_at)
        SELECT gen_random_uuid(), 'bench.history', 1, 'order', gen_random_uuid(), now() - interval '1 day',
               now() - interval '1 day'
        FROM generate_series(1, {rows});
        """


def main():
    arguments = parse_arguments()
    try:
        asyncio.run(Bench(arguments).main())
    except (StepFailed, CommandFailed, TimeoutError) as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
