#!/usr/bin/env python3
"""Bazaar's chaos suite: the whole system under load while its processes, broker, database and
network fail, then a check that nothing was lost, duplicated or left half done.

What a run does:
  1. starts a fresh stack of its own (scripts/stack.sh with BAZAAR_RUN_DIR=.run/chaos, AMQP on
     5683, PostgreSQL on 5443), so a developer's stack on the default ports is left alone;
  2. starts two instances of each service (8 processes) from release binaries, each as its
     service's own broker user and database role (from stack.env), connected to the broker and
     the database through TCP proxies of its own, with crash points armed (BAZAAR_FAULTS); a
     supervisor restarts any instance that exits;
  3. seeds products and accounts (as admin), then places orders at a fixed rate over both order
     instances (as their customers, with tokens signed with the stack's AUTH_JWT_SECRET; a failed
     request is retried once on the other instance, same Idempotency-Key), and cancels about 5%
     of them once confirmed;
  4. meanwhile injects faults: kill -9 and SIGSTOP of instances; broker connections closed, app
     stopped, node killed, memory alarm; database sessions terminated, immediate restart;
     latency, dropped connections and cuts on the proxies; poison messages;
  5. heals everything, restarts the instances without crash points, waits (at most 60 s) until
     every accepted order is final and everything drained, and checks invariants I1-I7 against
     the databases and the broker.
Prints progress while it runs and a summary at the end; the same summary goes to
.run/chaos/report.json. Exit status: 0 when no invariant is violated and every kind of fault was
injected, 1 otherwise, 2 when the stack or the services could not start.

Run it with the project's virtual environment (it needs pika, the AMQP client it publishes poison
messages and reads the dead-letter queues with):
  .run/venv/bin/python3 -m pip install pika
  .run/venv/bin/python3 Tests/Chaos/chaos.py --profile ci
(started with another python3, it switches to .run/venv/bin/python3 when that has pika).
Logs of the instances: .run/chaos/logs/<instance>.log.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path

# The harness's own modules, beside this file (Python puts the script's folder on the path).
from faults import INFRASTRUCTURE, INSTANCES, Faults
from invariants import (INVARIANTS, TERMINAL, Monitor, Violations, backlog, check, expected_dead_letters,
                        expected_depths, queued, wait_until)
from load import Fixtures, Load
from services import CRASH_POINTS, SERVICES, Fleet
from stack import AMQP_PORT, PG_PORT, CommandFailed, Stack

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".run" / "venv" / "bin" / "python3"

PROFILES = {
    # Crash probabilities are per event (each crash point is passed once or more per event): at
    # these rates both give a crash every few seconds across the eight instances.
    "ci": {"orders": 1500, "rate": 20.0, "cycles": 1, "cut": (10.0, 12.0), "crash_probability": 0.001},
    # 25/s leaves the eight instances (and their Python proxies) room to catch up after an outage
    # on two cores; at 50/s the backlog of a 20 s outage never clears while the load lasts, and
    # most orders end timed_out (consistently, but it exercises the compensations, not the saga).
    "full": {"orders": 10_000, "rate": 25.0, "cycles": 3, "cut": (10.0, 30.0), "crash_probability": 0.0004},
}
TERMINAL_WAIT = 60.0  # after the last fault healed: every accepted order final by then (I1)
DRAIN_WAIT = 60.0  # then: outboxes and queues empty
PROGRESS_EVERY = 5.0


def ensure_pika():
    """pika (publishing poison, reading the dead-letter queues) lives in the project's venv."""
    try:
        import pika  # noqa: F401
        return
    except ImportError:
        pass
    # Not sys.executable: the venv's python3 is a link to the system's; sys.prefix tells them apart.
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.exit(f"chaos: the Python package pika is missing: {VENV_PYTHON} -m pip install pika, "
             f"then run this script with {VENV_PYTHON}")


def parse_arguments():
    parser = argparse.ArgumentParser(
        prog="chaos.py", description=__doc__.split("\n\n")[0],
        epilog="Profiles:\n"
               "  ci    1,500 orders at 20/s, each kind of fault at least once, cuts of 10-12 s;\n"
               "        about 2 minutes from stack start to verdict\n"
               "  full  10,000 orders at 25/s, each kind of fault three times, cuts of 10-30 s;\n"
               "        about 8 minutes\n\n"
               "Invariants checked:\n" + "\n".join(f"  {k}  {v}" for k, v in INVARIANTS.items())
               + "\n\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="ci", help="how long and how hard (default: ci)")
    parser.add_argument("--bin-dir", default=str(REPO / ".build-release" / "release"),
                        help="where the release binaries (order-service, ...) are "
                             "(default: <repo>/.build-release/release)")
    parser.add_argument("--orders", type=int, help="orders to place (default: the profile's)")
    parser.add_argument("--rate", type=float, help="orders per second, open loop (default: the profile's)")
    parser.add_argument("--seed", type=int,
                        help="the same seed gives the same orders and the same faults in the same order; "
                             "timing, and so what exactly they hit, still varies (default: random, printed)")
    parser.add_argument("--crash-probability", type=float,
                        help="BAZAAR_FAULTS probability of each crash point (default: the profile's, "
                             "0.001 in ci, 0.0004 in full)")
    parser.add_argument("--duplicate-share", type=float, default=0.05,
                        help="BAZAAR_FAULTS relay.duplicate: share of events published twice (default: 0.05)")
    parser.add_argument("--keep-stack", action="store_true",
                        help="leave the broker and database running at the end (the services always stop)")
    arguments = parser.parse_args()
    profile = PROFILES[arguments.profile]
    arguments.orders = arguments.orders or profile["orders"]
    arguments.rate = arguments.rate or profile["rate"]
    if arguments.crash_probability is None:
        arguments.crash_probability = profile["crash_probability"]
    arguments.seed = arguments.seed if arguments.seed is not None else random.randrange(1_000_000)
    return arguments


class StartupFailed(Exception):
    pass


class ChaosRun:
    """One run: start, load and faults, heal, settle and drain, check; then the report."""

    def __init__(self, arguments):
        self.arguments = arguments
        self.profile = PROFILES[arguments.profile]
        self.started = time.monotonic()
        self.phase = "starting"
        self.stack = Stack(REPO)
        self.violations = Violations()
        self.fleet = self.load = self.monitor = self.faults = self.fixtures = None
        self.timings = {}
        self.late = []  # accepted orders not final when the time for it ran out
        self.result = {}

    def clock(self):
        return time.monotonic() - self.started

    def log(self, message):
        print(f"[{self.clock():5.0f}s] {message}", flush=True)

    async def main(self):
        try:
            await self.start()
            await self.run()
            await self.verify()
        finally:
            await self.stop()
        return self.report()

    # -- start ---------------------------------------------------------------------------------

    async def start(self):
        bin_dir = Path(self.arguments.bin_dir)
        missing = [s for s in SERVICES if not os.access(bin_dir / f"{s}-service", os.X_OK)]
        if missing:
            raise StartupFailed(f"no {', '.join(m + '-service' for m in missing)} in {bin_dir} "
                                "(build them with swift build -c release, or pass --bin-dir)")
        self.log(f"profile {self.arguments.profile}: {self.arguments.orders} orders at {self.arguments.rate}/s, "
                 f"seed {self.arguments.seed}, binaries from {bin_dir}")
        self.log("starting a fresh stack in .run/chaos (RabbitMQ :5683, PostgreSQL :5443)")
        try:
            await self.stack.fresh()
        except CommandFailed as error:
            raise StartupFailed(f"the stack did not start: {error}")

        log_dir = self.stack.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        needed = [f"{s.upper()}_{kind}_URL" for s in SERVICES for kind in ("AMQP", "DATABASE")] + ["AUTH_JWT_SECRET"]
        if any(key not in self.stack.settings for key in needed):
            raise StartupFailed(f"{self.stack.run_dir}/stack.env lacks some of {', '.join(needed)}: "
                                "this harness runs each service as its own user, as scripts/stack.sh sets them up")
        self.fleet = Fleet(str(bin_dir), str(log_dir), self.stack.settings, AMQP_PORT, PG_PORT)
        faults = ",".join([f"{p}={self.arguments.crash_probability}" for p in CRASH_POINTS]
                          + [f"relay.duplicate={self.arguments.duplicate_share}"])
        self.log(f"starting 8 instances, each behind its own proxies, BAZAAR_FAULTS={faults}")
        try:
            await self.fleet.start(faults)
        except TimeoutError as error:
            raise StartupFailed(str(error))

        self.fixtures = Fixtures(self.arguments.orders, self.stack.settings["AUTH_JWT_SECRET"])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.fixtures.seed, [i.url for i in self.fleet.of("inventory")],
                                       [i.url for i in self.fleet.of("payment")])
        except RuntimeError as error:
            raise StartupFailed(f"seeding failed: {error}")
        await self.wait_for_catalogue()
        self.load = Load([i.url for i in self.fleet.of("order")], self.fixtures,
                         random.Random(f"{self.arguments.seed}/orders"),
                         uuid.uuid4().hex[:8], workers=max(32, int(self.arguments.rate * 3)))
        self.monitor = Monitor(self.stack, self.violations, self.load.cancel_requested)

    async def wait_for_catalogue(self):
        """Orders are priced from the order service's copy of the catalogue, which it learns from
        ProductUpdated events: wait until it knows every product seeded."""
        skus = sorted(self.fixtures.products)
        listed = ", ".join(f"'{s}'" for s in skus)

        async def known():
            rows = await self.stack.sql(f"SELECT count(*) AS n FROM orders.catalogue WHERE sku IN ({listed})")
            return rows[0]["n"] == len(skus)

        if not await wait_until(known, 60):
            raise StartupFailed("the order service's catalogue did not learn the seeded products within 60 s")

    # -- the run -------------------------------------------------------------------------------

    async def run(self):
        self.faults = Faults(self.stack, self.fleet, random.Random(f"{self.arguments.seed}/faults"), self.clock,
                             self.profile["cut"], self.log)
        stop_monitor, stop_cancels = asyncio.Event(), asyncio.Event()
        background = [asyncio.create_task(self.monitor.run(stop_monitor)),
                      asyncio.create_task(self.load.cancel_confirmed(self.monitor.statuses, stop_cancels)),
                      asyncio.create_task(self.progress())]
        try:
            self.phase = "load+faults"
            load_seconds = self.arguments.orders / self.arguments.rate
            self.timings["load_started"] = round(self.clock(), 1)
            self.log(f"placing orders for about {load_seconds:.0f} s; faults from 5 s in")

            async def faults_after_a_while():
                await asyncio.sleep(5)
                await self.faults.run_schedule(max(20.0, load_seconds - 15), self.profile["cycles"])

            await asyncio.gather(self.load.drive(self.arguments.orders, self.arguments.rate), faults_after_a_while())
            stop_cancels.set()
            self.timings["load_and_faults_ended"] = round(self.clock(), 1)

            self.phase = "healing"
            await self.heal()
            # The time allowed for every order to become final runs from the end of the last
            # fault, so it includes the restarts that disarmed the crash points.
            healed = self.faults.last_healed or time.monotonic()
            self.timings["last_fault_healed"] = round(healed - self.started, 1)

            self.phase = "settling"
            self.log(f"all faults healed; waiting up to {TERMINAL_WAIT:.0f} s for every accepted order to be final")
            accepted = list(self.load.accepted)
            while True:
                # Full samples here: the background one reads only recent changes, and could miss
                # one committed by a transaction that started long before (a cut, a stopped process).
                await self.monitor.sample(full=True)
                if self.monitor.terminal(accepted) == len(accepted) or time.monotonic() - healed >= TERMINAL_WAIT:
                    break
                await asyncio.sleep(1)
            self.late = [o for o in accepted if self.monitor.statuses.get(o, (None,))[0] not in TERMINAL]
            self.timings["seconds_from_last_fault_to_all_final"] = \
                None if self.late else round(time.monotonic() - healed, 1)
            await self.drain()
        finally:
            stop_monitor.set()
            stop_cancels.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def heal(self):
        """Makes sure nothing is left broken (each fault heals itself; this is the safety net),
        then restarts every instance without crash points."""
        try:
            await self.stack.mend()
        except CommandFailed as error:
            self.log(f"could not bring the servers back to normal (the checks will show what that did): {error}")
        for proxy in self.fleet.proxies():
            proxy.heal()
            proxy.clear_latency()
        for instance in self.fleet.instances:
            instance.signal(signal.SIGCONT)
        self.log("restarting every instance without BAZAAR_FAULTS (one of each service at a time)")
        await self.fleet.disarm()

    async def drain(self):
        self.phase = "draining"
        depths = expected_depths(await expected_dead_letters(self.stack, self.faults.poison))
        last = {}

        async def drained():
            nonlocal last
            try:
                last = await backlog(self.stack, depths)
            except CommandFailed as error:
                last = {"error": str(error)}
            return not last

        started = time.monotonic()
        if await wait_until(drained, DRAIN_WAIT, pause=2.0):
            self.timings["seconds_to_drain"] = round(time.monotonic() - started, 1)
        else:
            self.log(f"not drained after {DRAIN_WAIT:.0f} s: {last}")
            self.timings["seconds_to_drain"] = None

    async def progress(self):
        in_queues, tick = "?", 0
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            accepted = list(self.load.accepted)
            active = ", ".join(sorted(self.faults.active)) or "-"
            if tick % 3 == 0:  # rabbitmqctl starts an Erlang VM: a second of CPU, so not every time
                try:
                    in_queues = await queued(self.stack)
                except CommandFailed:
                    in_queues = "?"
            tick += 1
            self.log(f"{self.phase} | placed {self.load.placed} accepted {len(accepted)} "
                     f"final {self.monitor.terminal(accepted)} | backlog: outboxes {self.monitor.unpublished}, "
                     f"queues {in_queues} | faults {len(self.faults.record)} crashes "
                     f"{sum(self.fleet.crash_counts().values())} restarts {self.fleet.restarts} | now: {active}")

    # -- verdict -------------------------------------------------------------------------------

    async def verify(self):
        self.phase = "checking"
        self.log("checking the invariants")
        self.result = await check(self.stack, self.violations, self.monitor, set(self.load.accepted), set(self.late),
                                  self.fixtures, self.faults.poison, self.load.cancel_requested)

    async def stop(self):
        if self.fleet:
            self.log("stopping the instances")
            await self.fleet.stop()
        if self.load:
            self.load.close()
        if not self.arguments.keep_stack:
            self.log("stopping the stack")
            try:
                await self.stack.down()
            except Exception as error:  # the verdict matters more than a failed stop
                self.log(f"could not stop the stack: {error}")

    def report(self):
        kinds = [k for k in INFRASTRUCTURE + INSTANCES if k != "process.kill-phase"] + ["process.kill"]
        injected = self.faults.counts()
        failed = {}
        for entry in self.faults.record:
            if str(entry["detail"]).startswith("failed"):
                failed[entry["kind"]] = failed.get(entry["kind"], 0) + 1
        never = [k for k in kinds if injected.get(k, 0) - failed.get(k, 0) == 0]
        load = self.load
        report = {
            "profile": self.arguments.profile, "seed": self.arguments.seed, "bin_dir": self.arguments.bin_dir,
            "orders": {"placed": load.placed, "accepted": len(load.accepted), "rejected_4xx": load.rejected,
                       "failed": load.failed, "retried_on_other_instance": load.retried,
                       "cancels_requested": len(load.cancel_requested),
                       "cancel_answers": {str(k): v for k, v in load.cancel_answers.items()},
                       **self.result},
            "faults": {k: {"injected": injected.get(k, 0), "failed": failed.get(k, 0)} for k in kinds},
            "faults_never_injected": never,
            "crashes": self.fleet.crash_counts(),
            "restarts": {"unplanned": self.fleet.restarts, "planned": self.fleet.planned_restarts},
            "monitor": {"samples": self.monitor.samples, "failed_samples": self.monitor.failed_samples},
            "timings": {**self.timings, "total_seconds": round(self.clock(), 1)},
            "violations": self.violations.summary(),
            "fault_log": self.faults.record,
            "poison": self.faults.poison,
        }
        report["verdict"] = "pass" if self.violations.total() == 0 and not never else "fail"
        return report


def print_summary(report):
    def table(title, rows):
        print(f"\n{title}")
        width = max((len(str(r[0])) for r in rows), default=0)
        for name, value in rows:
            print(f"  {str(name):<{width}}  {value}")

    def within(seconds, limit):
        return f"NOT WITHIN {limit:.0f} s" if seconds is None else seconds

    orders = report["orders"]
    table("Orders", [
        ("placed", orders["placed"]), ("accepted", orders["accepted"]), ("refused (4xx)", orders["rejected_4xx"]),
        ("failed on both instances", f"{sum(orders['failed'].values())} (last answer: {orders['failed']})"),
        ("retried on the other instance", orders["retried_on_other_instance"]),
        ("customer cancels sent", f"{orders['cancels_requested']} (answers {orders['cancel_answers']})"),
        ("in the database", orders.get("orders_in_database", "?")),
        *[(f"  {outcome}", n) for outcome, n in orders.get("outcomes", {}).items()],
    ])
    table("Faults injected", [(k, v["injected"] if not v["failed"] else f"{v['injected']} ({v['failed']} failed)")
                              for k, v in report["faults"].items()])
    table("Crashes (BAZAAR_FAULTS)", list(report["crashes"].items())
          + [("restarts", f"{report['restarts']['unplanned']} (+{report['restarts']['planned']} planned)")])
    timings = report["timings"]
    table("Timings (s)", [
        ("last fault healed at", timings.get("last_fault_healed")),
        ("from then to every order final", within(timings.get("seconds_from_last_fault_to_all_final"), TERMINAL_WAIT)),
        ("then to drained", within(timings.get("seconds_to_drain"), DRAIN_WAIT)),
        ("whole run", timings["total_seconds"]),
    ])
    rows = []
    for key, entry in report["violations"].items():
        rows.append((key, f"{entry['count']:>4}  {INVARIANTS[key]}"))
        rows += [("", f"      e.g. {example}") for example in entry["examples"]]
    table("Violations", rows)
    if report["faults_never_injected"]:
        print(f"\nFaults never injected: {', '.join(report['faults_never_injected'])}")
    print(f"\nVerdict: {report['verdict'].upper()}  (report: .run/chaos/report.json)")


def main():
    arguments = parse_arguments()
    ensure_pika()
    chaos = ChaosRun(arguments)
    try:
        report = asyncio.run(chaos.main())
    except StartupFailed as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2
    (REPO / ".run" / "chaos" / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report)
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
