import AMQP
import ArgumentParser
import EventRuntime
import Foundation
import Postgres
import Synchronization

/// `bazaar bench`: measurements for `make bench` (Tests/Bench/bench.py), which compares the whole
/// system's throughput with what this machine's broker and database can do at all.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the raw capacity of the broker and the database (used by `make bench`).",
        subcommands: [RawCommand.self])
}

/// `bazaar bench raw`: the raw capacity of the broker and the database through the project's own
/// `AMQP` and `Postgres` modules, used as the services use them:
///   - confirmed publishing of persistent messages to a quorum queue, in batches as the outbox
///     relay publishes (one batch written, then its confirms awaited);
///   - consuming and acking them one by one, several consumers with a prefetch, as a service does;
///   - the saga-step transaction (inbox insert, business rows, outbox insert, NOTIFY) through a
///     connection pool, at a few concurrencies.
/// Everything it declares (a temporary queue, a schema) is removed at the end.
struct RawCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raw",
        abstract: "Confirmed-publish, consume-and-ack and saga-step transaction rates of this machine.",
        discussion: """
            Uses the admin's AMQP_URL and DATABASE_URL (environment, or the stack's stack.env). \
            Declares a temporary quorum queue (bench.raw.<random>) and a schema (--schema), and \
            removes both at the end unless --keep-schema (`make bench` keeps the schema for pgbench, \
            whose Tests/Bench/saga-step.sql runs the same transaction).
            """)

    @Option(help: "Messages to publish, then consume.")
    var messages = 20_000

    @Option(help: "Messages per confirmed batch (the outbox relay's batch size).")
    var batchSize = 200

    @Option(help: "Bytes of each message body (an event envelope is about 400).")
    var messageBytes = 400

    @Option(help: "Concurrent consumers on the queue.")
    var consumers = 1

    @Option(help: "Unacknowledged deliveries per consumer (a service's AMQP_PREFETCH).")
    var prefetch: UInt16 = 128

    @Option(help: "Concurrent saga-step transactions to measure, comma-separated.", transform: RawCommand.parseList)
    var concurrency: [Int] = [4, 16]

    @Option(help: "Seconds of saga-step transactions at each concurrency.")
    var transactionSeconds = 5.0

    @Option(help: "Products the saga steps spread their stock updates over.")
    var products = 100

    @Option(help: "Schema of the saga-step tables (dropped first if it exists).")
    var schema = "bench_raw"

    @Flag(help: "Leave the schema and its tables in place (for pgbench).")
    var keepSchema = false

    @Flag(help: "Skip the broker measurements.")
    var skipAmqp = false

    @Flag(help: "Skip the database measurements.")
    var skipPostgres = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard messages >= 1, batchSize >= 1, messageBytes >= 1, consumers >= 1, prefetch >= 1 else {
            throw ValidationError("--messages, --batch-size, --message-bytes, --consumers and --prefetch must be at least 1")
        }
        guard concurrency.allSatisfy({ $0 >= 1 && $0 <= 100 }) else { throw ValidationError("--concurrency: 1 to 100 each") }
        guard transactionSeconds > 0, products >= 1 else { throw ValidationError("--transaction-seconds and --products must be positive") }
    }

    func run() async throws {
        let environment = BazaarEnvironment.load()
        var report = RawReport()
        if !skipAmqp {
            let (publish, consume) = try await measureBroker(environment)
            report.confirmedPublish = publish
            report.consumeAndAck = consume
            (report.consumers, report.prefetch) = (consumers, Int(prefetch))
        }
        if !skipPostgres {
            report.sagaStep = try await measureDatabase(environment)
        }
        print(output.json ? try jsonText(report) : report.rendered())
    }

    private func progress(_ line: String) {
        guard !output.json else { return }
        print(line)
        fflush(nil)
    }

    // MARK: The broker

    private func measureBroker(_ environment: BazaarEnvironment) async throws -> (RawReport.Rate, RawReport.Rate) {
        let publisher = try await AMQPConnection.connect(
            AMQPConfiguration(url: environment.amqpURL, connectionName: "bazaar-bench-publish"), logger: cliLogger)
        let consuming = try await AMQPConnection.connect(
            AMQPConfiguration(url: environment.amqpURL, connectionName: "bazaar-bench-consume"), logger: cliLogger)
        let queue = "bench.raw.\(UUID().uuidString.prefix(8).lowercased())"
        do {
            try await publisher.declare(Topology(queues: [QueueSpec(name: queue)]))
            progress("bench raw: publishing \(messages) persistent \(messageBytes)-byte messages to quorum queue \(queue) in confirmed batches of \(batchSize)")
            let publish = try await publishAll(to: queue, on: publisher)
            progress(publish.rendered("confirmed publish"))
            progress("bench raw: consuming them with \(consumers) consumers, prefetch \(prefetch), one ack each")
            let consume = try await consumeAll(from: queue, on: consuming)
            progress(consume.rendered("consume and ack"))
            try await publisher.deleteQueue(queue)
            await publisher.close()
            await consuming.close()
            return (publish, consume)
        } catch {
            try? await publisher.deleteQueue(queue)
            await publisher.close()
            await consuming.close()
            throw error
        }
    }

    private func publishAll(to queue: String, on connection: AMQPConnection) async throws -> RawReport.Rate {
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: messageBytes)
        let message = OutgoingMessage(
            exchange: "", routingKey: queue, body: body, properties: AMQPProperties(contentType: "application/json", persistent: true))
        let started = ContinuousClock.now
        var sent = 0
        while sent < messages {
            let count = min(batchSize, messages - sent)
            let outcomes = await connection.publish(batch: Array(repeating: message, count: count))
            if let failure = outcomes.lazy.compactMap(\.error).first {
                throw CLIError("publishing to \(queue) failed: \(failure)")
            }
            sent += count
        }
        return RawReport.Rate(count: sent, seconds: (ContinuousClock.now - started).seconds)
    }

    private func consumeAll(from queue: String, on connection: AMQPConnection) async throws -> RawReport.Rate {
        let tally = ConsumeTally()
        let started = ContinuousClock.now
        var subscriptions: [AMQPConsumer] = []
        for index in 0..<consumers {
            subscriptions.append(try await connection.consume(queue: queue, prefetch: prefetch, consumerTag: "bench-\(index)"))
        }
        let total = messages
        let finished: ContinuousClock.Instant = try await withThrowingTaskGroup(of: Void.self) { group in
            for subscription in subscriptions {
                group.addTask {
                    do {
                        for try await delivery in subscription {
                            try await delivery.ack()
                            if tally.acked.add(1, ordering: .relaxed).newValue >= total { return }
                        }
                    } catch {
                        tally.failure.withLock { $0 = $0 ?? "\(error)" }
                    }
                }
            }
            // Polled rather than signalled: a 5 ms granularity is nothing against a run of seconds,
            // and the consumers that got no last message must be stopped from here anyway.
            let deadline = ContinuousClock.now + .seconds(300)
            while tally.acked.load(ordering: .relaxed) < total, tally.failure.withLock({ $0 }) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            let finished = ContinuousClock.now
            for subscription in subscriptions { try? await subscription.cancel() }
            group.cancelAll()
            return finished
        }
        if let failure = tally.failure.withLock({ $0 }) { throw CLIError("consuming \(queue) failed: \(failure)") }
        let count = tally.acked.load(ordering: .relaxed)
        guard count >= total else { throw CLIError("only \(count) of \(total) messages came back from \(queue) within 300 s") }
        return RawReport.Rate(count: count, seconds: (finished - started).seconds)
    }

    // MARK: The database

    private func measureDatabase(_ environment: BazaarEnvironment) async throws -> [RawReport.Transactions] {
        let configuration = try PostgresConfiguration(url: environment.databaseURL, applicationName: "bazaar-bench")
        let setup = try await PostgresConnection.connect(configuration: configuration, logger: cliLogger)
        let quoted = try PostgresIdentifier.quoted(schema)
        try await createTables(on: setup, quoted: quoted)
        var results: [RawReport.Transactions] = []
        do {
            for tasks in concurrency {
                progress("bench raw: saga-step transactions, \(tasks) at a time, for \(transactionSeconds) s")
                let result = try await runSagaSteps(tasks: tasks, configuration: configuration, quoted: quoted)
                progress(result.rendered())
                results.append(result)
            }
        } catch {
            if !keepSchema { _ = try? await setup.execute("DROP SCHEMA IF EXISTS \(quoted) CASCADE") }
            await setup.close()
            throw error
        }
        if !keepSchema { try await setup.execute("DROP SCHEMA IF EXISTS \(quoted) CASCADE") }
        await setup.close()
        return results
    }

    /// The runtime's own outbox and inbox (its migrations, as every service applies them) and two
    /// business tables shaped like the inventory service's products and reservations.
    private func createTables(on connection: PostgresConnection, quoted: String) async throws {
        try await connection.execute("DROP SCHEMA IF EXISTS \(quoted) CASCADE")
        try await MigrationRunner(schema: schema, logger: cliLogger).run(RuntimeTables.migrations, on: connection)
        try await connection.execute(
            """
            CREATE TABLE \(quoted).products (
                sku text PRIMARY KEY, available int NOT NULL, reserved int NOT NULL DEFAULT 0,
                updated_at timestamptz NOT NULL DEFAULT now())
            """)
        try await connection.execute(
            """
            CREATE TABLE \(quoted).reservations (
                order_id uuid PRIMARY KEY, status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())
            """)
        try await connection.execute(
            "INSERT INTO \(quoted).products (sku, available) SELECT 'BENCH-' || n, 1000000000 FROM generate_series(1, $1) n",
            products)
    }

    private func runSagaSteps(tasks: Int, configuration: PostgresConfiguration, quoted: String) async throws -> RawReport.Transactions {
        let pool = PostgresPool(configuration: configuration, maxConnections: tasks, logger: cliLogger)
        // An event envelope's size: the payload the outbox stores and the relay publishes.
        let payload = #"{"data":"\#(String(repeating: "x", count: 380))"}"#
        let (products, seconds) = (products, transactionSeconds)
        let started = ContinuousClock.now
        let deadline = started + .seconds(seconds)
        let committed = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    var count = 0
                    while ContinuousClock.now < deadline {
                        let sku = "BENCH-\(Int.random(in: 1...products))"
                        try await pool.transaction { tx in try Self.sagaStep(tx, quoted: quoted, sku: sku, payload: payload) }
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = (ContinuousClock.now - started).seconds
        await pool.shutdown()
        return RawReport.Transactions(concurrency: tasks, count: committed, seconds: elapsed)
    }

    /// One step of the saga as the inventory service takes it on `order.placed`: the inbox row
    /// that makes it idempotent, the stock row locked and moved, the reservation, the outbox row
    /// of the answer and the NOTIFY that wakes the relay. (Tests/Bench/saga-step.sql: the same.)
    private static func sagaStep(_ tx: PostgresTransaction, quoted: String, sku: String, payload: String) throws {
        let orderId = UUID()
        try tx.execute(
            """
            INSERT INTO \(quoted).inbox (event_id, event_type, event_version, source, correlation_id, causation_id, occurred_at)
            VALUES ($1, 'order.placed', 1, 'order', $2, $2, now()) ON CONFLICT (event_id) DO NOTHING
            """, UUID(), orderId)
        _ = try tx.query("SELECT available FROM \(quoted).products WHERE sku = $1 FOR UPDATE", sku)
        try tx.execute("INSERT INTO \(quoted).reservations (order_id, status) VALUES ($1, 'reserved')", orderId)
        try tx.execute(
            "UPDATE \(quoted).products SET available = available - 1, reserved = reserved + 1, updated_at = now() WHERE sku = $1",
            sku)
        try tx.execute(
            """
            INSERT INTO \(quoted).outbox
                (event_id, event_type, event_version, exchange, routing_key, correlation_id, causation_id, payload, headers)
            VALUES ($1, 'stock.reserved', 1, 'inventory', 'stock.reserved.v1', $2, $2, $3::json, '{}'::jsonb)
            """, UUID(), orderId, payload)
        tx.notify(channel: "bench_outbox")
    }

    static func parseList(_ text: String) throws -> [Int] {
        let values = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty else { throw ValidationError("\(text): expected numbers separated by commas, like 4,16") }
        return values
    }
}

/// The consumers' shared count of acked deliveries, and the first error any of them met.
private final class ConsumeTally: Sendable {
    let acked = Atomic<Int>(0)
    let failure = Mutex<String?>(nil)
}

/// What `bazaar bench raw` measured, for people and for `make bench`.
struct RawReport: Codable {
    /// Messages handled in a time, and the rate that makes.
    struct Rate: Codable {
        var count: Int
        var seconds: Double
        var perSecond: Double

        init(count: Int, seconds: Double) {
            self.count = count
            self.seconds = seconds
            perSecond = Double(count) / max(seconds, 0.000_001)
        }

        func rendered(_ name: String) -> String {
            "  \(name.padding(toLength: 20, withPad: " ", startingAt: 0))\(String(format: "%9.0f", perSecond)) msg/s  (\(count) in \(String(format: "%.2f", seconds)) s)"
        }
    }

    /// Saga-step transactions committed at one concurrency.
    struct Transactions: Codable {
        var concurrency: Int
        var count: Int
        var seconds: Double
        var perSecond: Double

        init(concurrency: Int, count: Int, seconds: Double) {
            self.concurrency = concurrency
            self.count = count
            self.seconds = seconds
            perSecond = Double(count) / max(seconds, 0.000_001)
        }

        func rendered() -> String {
            "  saga step × \(String(format: "%-7d", concurrency))\(String(format: "%9.0f", perSecond)) tx/s   (\(count) in \(String(format: "%.2f", seconds)) s)"
        }
    }

    var confirmedPublish: Rate?
    var consumeAndAck: Rate?
    /// How consumeAndAck consumed: consumers on the queue, and the prefetch of each.
    var consumers: Int?
    var prefetch: Int?
    var sagaStep: [Transactions] = []

    func rendered() -> String {
        var lines = ["raw capacity:"]
        if let confirmedPublish { lines.append(confirmedPublish.rendered("confirmed publish")) }
        if let consumeAndAck { lines.append(consumeAndAck.rendered("consume and ack")) }
        lines += sagaStep.map { $0.rendered() }
        return lines.joined(separator: "\n")
    }
}
