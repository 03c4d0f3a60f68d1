import AMQP
import ArgumentParser
import Contracts
import EventRuntime
import Foundation
import Postgres

/// `bazaar replay`: rebuild a read model from events, or send a late consumer the events it missed.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Rebuild the order service's catalogue copy, or replay published events to one queue.",
        subcommands: [Catalogue.self, Events.self])

    struct Catalogue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild the order service's copy of the catalogue from a snapshot inventory sends.",
            discussion: """
                The order service asks inventory (CatalogueSnapshotRequested); inventory answers with one \
                ProductSnapshot per product; the order service stages them beside its live copy and swaps them in \
                once it has them all. Orders keep being priced from the live copy until then. Reports how many \
                products were rebuilt and how long it took.
                """)

        @Option(help: "How long to wait for the rebuild, in seconds.")
        var timeout = 60

        @OptionGroup var output: OutputOptions

        struct Rebuild: Codable {
            var rebuildId: String
            var status: String
            var expected: Int?
            var received: Int
            var replaced: Int?
            var keptNewer: Int?
            var removed: Int?
            var durationMs: Int?
        }

        func run() async throws {
            let client = ServiceClient(environment: BazaarEnvironment.load())
            let started = try await client.send("POST", .order, "/catalogue/rebuilds")
            guard started.status == 202 else {
                throw CLIError("the order service refused the rebuild (\(started.status)): \(started.problem)")
            }
            var rebuild = try started.decode(Rebuild.self)
            if !output.json { print("rebuild \(rebuild.rebuildId) started: asked inventory for a snapshot") }
            let deadline = ContinuousClock.now + .seconds(timeout)
            var shown = -1
            while rebuild.status != "completed" {
                guard ContinuousClock.now < deadline else {
                    throw CLIError(
                        "rebuild \(rebuild.rebuildId) not done after \(timeout) s: received \(rebuild.received) of "
                            + "\(rebuild.expected.map(String.init) ?? "?") products. Orders are still priced from the live copy, "
                            + "which the snapshot replaces if it completes later. Are inventory and its relay running? "
                            + "(An empty catalogue sends no snapshot.)")
                }
                try await Task.sleep(for: .milliseconds(100))
                let polled = try await client.send("GET", .order, "/catalogue/rebuilds/\(rebuild.rebuildId)")
                guard polled.status == 200 else { throw CLIError("reading rebuild \(rebuild.rebuildId) failed (\(polled.status)): \(polled.problem)") }
                rebuild = try polled.decode(Rebuild.self)
                if !output.json, rebuild.status != "completed", let expected = rebuild.expected, rebuild.received != shown {
                    print("  received \(rebuild.received)/\(expected) products")
                    shown = rebuild.received
                }
            }
            if output.json {
                print(try jsonText(rebuild))
            } else {
                let seconds = Double(rebuild.durationMs ?? 0) / 1000
                print(
                    "rebuilt the catalogue: \(rebuild.expected ?? 0) products in \(String(format: "%.2f", seconds)) s "
                        + "(\(rebuild.replaced ?? 0) from the snapshot, \(rebuild.keptNewer ?? 0) kept as newer live updates, "
                        + "\(rebuild.removed ?? 0) stale removed)")
            }
        }
    }

    struct Events: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a service's already-published events again, to one queue only.",
            discussion: """
                For a consumer that bound its queue late. Reads the service's outbox (published rows are kept for \
                OUTBOX_RETENTION_HOURS) and publishes each event written since --since to the queue through the \
                default exchange, never to the service's exchange, so other consumers see nothing twice. Events go \
                in outbox order (the order they were written, which for one order is the order of its saga), with \
                their own message id, as their producer's broker user, and with the header x-replayed: true. \
                The consumer's inbox skips events it already applied: running the same replay twice is harmless. \
                An event counts as published once the relay has marked it, at most about 50 ms after the broker \
                confirmed it.

                Without --type: the events the queue's service consumes, if the queue is a service's \
                (order, inventory, payment, notification); otherwise every event of the service.
                """)

        @Option(help: "The service whose events to replay: order, inventory, payment or notification.")
        var fromService: String

        @Option(help: "Events written at or after this time: ISO 8601 (2026-11-24T01:00:00Z) or an age (90s, 15m, 2h, 7d).")
        var since: String

        @Option(name: .customLong("type"), help: "An event type to replay (OrderPlaced); repeat for more. Default: see below.")
        var types: [String] = []

        @Option(help: "The queue to deliver to; it must exist.")
        var toQueue: String

        func validate() throws {
            guard ServiceName(rawValue: fromService) != nil else {
                throw ValidationError("--from-service \(fromService): expected one of \(ServiceName.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            _ = try Self.parse(since: since)
            let known = Set(EventCatalogue.events.map { $0.type })
            if let unknown = types.first(where: { !known.contains($0) }) {
                throw ValidationError("--type \(unknown): no such event; events are \(known.sorted().joined(separator: ", "))")
            }
            guard !toQueue.isEmpty else { throw ValidationError("--to-queue must name a queue") }
        }

        /// ISO 8601 (with or without fractional seconds), or an age such as `15m` before now.
        static func parse(since text: String, now: Date = Date()) throws -> Date {
            if let date = try? Date(text, strategy: .iso8601) { return date }
            if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date }
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
            if let unit = text.last.flatMap({ units[$0] }), let amount = Double(text.dropLast()), amount >= 0 {
                return now.addingTimeInterval(-amount * unit)
            }
            throw ValidationError("--since \(text): expected ISO 8601 (2026-11-24T01:00:00Z) or an age (90s, 15m, 2h, 7d)")
        }

        func run() async throws {
            let environment = BazaarEnvironment.load()
            let service = ServiceName(rawValue: fromService)!
            let since = try Self.parse(since: since)
            let types = types.isEmpty ? try defaultTypes(from: service) : types
            let schema = environment.schema(of: service)

            let configuration = try PostgresConfiguration(url: environment.databaseURL, applicationName: "bazaar-cli")
            let database: PostgresConnection
            do {
                database = try await PostgresConnection.connect(configuration: configuration, logger: cliLogger)
            } catch {
                throw CLIError("database not reachable at \(configuration) — is the stack running? try `bazaar stack up`")
            }
            let rows: [OutboxReplay.Row]
            let oldest: Date?
            do {
                rows = try await OutboxReplay.publishedRows(schema: schema, since: since, types: types, on: database)
                oldest = try await OutboxReplay.oldestKept(schema: schema, on: database)
                await database.close()
            } catch {
                await database.close()
                throw error
            }
            if let oldest, oldest > since {
                // Rows past OUTBOX_RETENTION_HOURS are deleted: say so rather than replay less in silence.
                print(
                    "note: the oldest event the \(service) outbox still holds was written at \(oldest.formatted(.iso8601)); "
                        + "a replay reaches no further back (rows older than OUTBOX_RETENTION_HOURS are deleted)")
            }

            let broker = try AMQPConfiguration(url: environment.amqpURL, connectionName: "bazaar-cli")
            let connection: AMQPConnection
            do {
                connection = try await AMQPConnection.connect(broker, logger: cliLogger)
            } catch {
                throw CLIError("broker not reachable at \(broker.redactedURL) — is the stack running? try `bazaar stack up`")
            }
            do {
                do {
                    _ = try await connection.queueStatus(toQueue)
                } catch {
                    throw CLIError("no queue \(toQueue) (\(error)): declare and bind it first")
                }
                let user = environment.publisherUsers.user(of: service)
                var replayed = 0
                // Batches keep the order: one channel, one queue, published one after another.
                for start in stride(from: 0, to: rows.count, by: 200) {
                    let batch = rows[start..<min(start + 200, rows.count)]
                    let outcomes = await connection.publish(
                        batch: batch.map { OutboxReplay.message($0, from: service, as: user, toQueue: toQueue) })
                    for (row, outcome) in zip(batch, outcomes) {
                        if let error = outcome.error {
                            throw CLIError(
                                "replayed \(replayed) of \(rows.count) events; \(row.type) \(row.eventId.uuidString.lowercased()) failed: \(error). "
                                    + "Running the command again is safe: the consumer's inbox skips what it already applied.")
                        }
                        replayed += 1
                    }
                }
                print(
                    "replayed \(replayed) event(s) of \(service) written since \(since.formatted(.iso8601)) to queue \(toQueue)"
                        + (types.isEmpty ? "" : " (\(types.joined(separator: ", ")))"))
            } catch {
                await connection.close()
                throw error
            }
            await connection.close()
        }

        /// What the queue's service consumes from `producer`, when the queue is a service's; else
        /// nothing, which means every event.
        private func defaultTypes(from producer: ServiceName) throws -> [String] {
            guard let consumer = ServiceName.allCases.first(where: { $0.queue == toQueue }) else { return [] }
            let consumed = EventCatalogue.subscriptions[consumer, default: []].filter { $0.producer == producer }.map { $0.type }
            guard !consumed.isEmpty else {
                throw CLIError("the \(consumer) service consumes no \(producer) events: nothing to replay to \(toQueue) (name one with --type)")
            }
            return Array(Set(consumed)).sorted()
        }
    }
}
