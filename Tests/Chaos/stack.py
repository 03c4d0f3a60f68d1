"""The chaos run's own RabbitMQ and PostgreSQL: started, queried, broken and mended.

The stack is the project's `scripts/stack.sh`, pointed at `.run/chaos` and at ports of its own
(AMQP 5683, PostgreSQL 5443) so that a developer's stack on the default ports keeps running.
Everything here runs commands (`stack.sh`, `rabbitmqctl`, `psql`, `pg_ctl`) as subprocesses:
the harness needs no database or broker library for these.
"""

import asyncio
import json
import os
import signal
from pathlib import Path

AMQP_PORT = 5683
PG_PORT = 5443
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class CommandFailed(Exception):
    pass


async def run(*argv, env=None, cwd=None, timeout=60.0, check=True):
    """Runs a command; returns (exit code, stdout, stderr) as text. A command still running after
    `timeout` seconds is killed and reported as failed."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise CommandFailed(f"{' '.join(map(str, argv))}: no answer within {timeout:.0f} s")
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    if check and process.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))} exited with {process.returncode}: {(err or out).strip()[-800:]}")
    return process.returncode, out, err


class Stack:
    """A stack of its own under `.run/<name>`, on ports of its own (the chaos suite's by default;
    the benchmark passes its own)."""

    def __init__(self, repo: Path, name="chaos", amqp_port=AMQP_PORT, pg_port=PG_PORT):
        self.repo = repo
        self.run_dir = repo / ".run" / name
        self.amqp_port = amqp_port
        self.pg_port = pg_port
        self.rabbit_dir = self.run_dir / "rabbitmq"
        self.settings = {}  # stack.env, once the stack is up

    # -- starting and stopping ---------------------------------------------------------------

    def script_env(self):
        return dict(os.environ, BAZAAR_RUN_DIR=str(self.run_dir),
                    BAZAAR_AMQP_PORT=str(self.amqp_port), BAZAAR_PG_PORT=str(self.pg_port))

    async def stack_sh(self, command, timeout=180.0):
        return await run(str(self.repo / "scripts" / "stack.sh"), command, env=self.script_env(),
                         cwd=self.repo, timeout=timeout)

    async def fresh(self):
        """Stops what a previous run may have left, wipes its data and starts both servers anew."""
        try:
            await self.stack_sh("down", timeout=120.0)
        except CommandFailed:
            pass  # nothing was running, or only half of it: the wipe below is what matters
        # The cluster may live elsewhere, behind a link (see pg_paths): wipe it there too, or the
        # next start would find its old data.
        postgres = (self.run_dir / "postgres").resolve()
        await run("rm", "-rf", str(self.run_dir), str(postgres))
        await self.stack_sh("up", timeout=240.0)
        self.settings = dict(
            line.split("=", 1) for line in (self.run_dir / "stack.env").read_text().splitlines()
            if "=" in line and not line.startswith("#"))

    async def down(self):
        await self.stack_sh("down", timeout=120.0)

    @property
    def admin_amqp_url(self):
        return self.settings["AMQP_URL"]

    @property
    def admin_database_url(self):
        return self.settings["DATABASE_URL"]

    # -- PostgreSQL ----------------------------------------------------------------------------

    async def sql(self, query, timeout=15.0):
        """The rows of `query`, as a list of dicts (psql aggregates them into one JSON array)."""
        wrapped = f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({query}) t"
        _, out, _ = await run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.admin_database_url,
                              "-c", wrapped, env=dict(os.environ, PGCONNECT_TIMEOUT="3"), timeout=timeout)
        return json.loads(out)

    async def execute(self, statement, timeout=15.0):
        await run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.admin_database_url, "-c", statement,
                  env=dict(os.environ, PGCONNECT_TIMEOUT="3"), timeout=timeout)

    def pg_paths(self):
        # The cluster may live outside the checkout (stack.sh links it there when the postgres user
        # can't reach .run); pg_ctl, run as postgres, must be handed the resolved path.
        pg_dir = (self.run_dir / "postgres").resolve()
        return pg_dir / "data", pg_dir / "postgres.log"

    async def restart_postgres_immediately(self):
        """`pg_ctl restart -m immediate`: every backend dies without a checkpoint, as in a crash;
        the server recovers from its WAL. The start options come back from postmaster.opts."""
        data, log = self.pg_paths()
        await run("runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log),
                  "-m", "immediate", "-w", "-t", "60", "restart", cwd="/", timeout=90.0)

    async def terminate_service_sessions(self):
        """Kills every database session of the services (their INSTANCE_NAME is their
        application_name); returns how many."""
        rows = await self.sql(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
            "WHERE application_name ~ '^(order|inventory|payment|notification)-[0-9]+$'")
        return sum(1 for row in rows if row["done"])

    # -- RabbitMQ --------------------------------------------------------------------------------

    async def rabbitmqctl(self, *args, timeout=60.0):
        _, out, _ = await run(self.settings["RABBITMQCTL"], *args, timeout=timeout)
        return out

    async def queues(self):
        """{queue: (ready, unacked)} for every queue of the broker."""
        out = await self.rabbitmqctl("-q", "list_queues", "--no-table-headers", "name", "messages_ready",
                                     "messages_unacknowledged")
        queues = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                queues[parts[0]] = (int(parts[1]), int(parts[2]))
        return queues

    async def bindings(self):
        """(exchange, routing key, queue) of every binding to a queue."""
        out = await self.rabbitmqctl("-q", "list_bindings", "--no-table-headers", "source_name", "routing_key",
                                     "destination_name", "destination_kind")
        rows = [line.split("\t") for line in out.splitlines()]
        return [(r[0], r[1], r[2]) for r in rows if len(r) == 4 and r[3] == "queue" and r[0]]

    def broker_pids(self):
        """The Erlang VMs of our node: the pid file's, and any other beam whose home is our
        folder (the test stack.sh uses to recognise it), so a kill leaves nothing behind."""
        pids = set()
        try:
            pids.add(int((self.rabbit_dir / "rabbitmq.pid").read_text().strip()))
        except (OSError, ValueError):
            pass
        marker = f"-home {self.rabbit_dir} "
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                        pids.add(int(entry.name))
                except OSError:
                    pass
        return {pid for pid in pids if Path(f"/proc/{pid}").exists()}

    async def kill_broker(self):
        """kill -9 of the node, and a wait until no process of it is left."""
        for _ in range(50):
            pids = self.broker_pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await asyncio.sleep(0.2)
        raise CommandFailed(f"RabbitMQ processes {sorted(self.broker_pids())} survived kill -9")

    async def start_broker(self):
        """Starts the node again as it was (stack.sh up keeps PostgreSQL and restarts RabbitMQ)."""
        await self.stack_sh("up", timeout=180.0)

    async def mend(self):
        """Brings both servers back to normal whatever a fault left behind (a fault heals itself;
        this is for one whose healing step failed): starts what is not running, restarts the
        broker's application if it was stopped, lifts a memory alarm."""
        await self.stack_sh("up", timeout=180.0)
        await self.rabbitmqctl("start_app", timeout=120)  # does nothing when it runs
        await self.rabbitmqctl("set_vm_memory_high_watermark", await self.configured_memory_watermark())

    async def configured_memory_watermark(self):
        for line in (self.rabbit_dir / "rabbitmq.conf").read_text().splitlines():
            if line.startswith("vm_memory_high_watermark.relative"):
                return line.split("=", 1)[1].strip()
        return "0.4"  # RabbitMQ's default
