import AMQP
import ArgumentParser
import Contracts
import EventRuntime
import Foundation
import Logging

/// `bazaar dlq`: what was dead-lettered and why; send messages back; drop them.
struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show, replay or purge dead-lettered messages.",
        discussion: """
            Each service parks messages it can't process in <service>.dlq, with the reason in headers \
            (x-bazaar-reason, x-bazaar-error) or, for messages the broker dead-lettered, in x-death. \
            Nothing is removed without being printed or replayed first.
            """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self])

    struct QueueOptions: ParsableArguments {
        @Option(help: "A dead-letter queue (default: all four, order.dlq … notification.dlq).")
        var queue: String?

        var queues: [String] { queue.map { [$0] } ?? ServiceName.allCases.map(\.deadLetterQueue) }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead-lettered messages and why they were parked.")
        @OptionGroup var queues: QueueOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var listed: [DeadLetter] = []
            try await DeadLetters.inspect(queues.queues) { queue, deliveries, _ in
                listed += deliveries.map { DeadLetter($0, queue: queue) }
                return []
            }
            if output.json {
                print(try jsonText(listed))
            } else if listed.isEmpty {
                print("no dead letters in \(queues.queues.joined(separator: ", "))")
            } else {
                for letter in listed { print(letter.summary) }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter: headers and body.")
        @Argument(help: "Its message id (as `bazaar dlq list` prints it).")
        var messageId: String
        @OptionGroup var queues: QueueOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var found: DeadLetter?
            try await DeadLetters.inspect(queues.queues) { queue, deliveries, _ in
                if let match = deliveries.first(where: { $0.properties.messageId == messageId }) { found = DeadLetter(match, queue: queue) }
                return []
            }
            guard let found else { throw CLIError("no dead letter with message id \(messageId) in \(queues.queues.joined(separator: ", "))") }
            print(output.json ? try jsonText(found) : found.details)
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish dead letters again to the exchange and routing key they first went to, then remove them.")
        @Argument(help: "Message ids to replay.")
        var messageIds: [String] = []
        @Flag(help: "Replay every dead letter of the queue(s).")
        var all = false
        @OptionGroup var queues: QueueOptions

        func validate() throws {
            guard all || !messageIds.isEmpty else { throw ValidationError("name message ids to replay, or --all") }
        }

        func run() async throws {
            var replayed = 0
            try await DeadLetters.inspect(queues.queues) { queue, deliveries, connection in
                var done: [AMQPDelivery] = []
                for delivery in deliveries where all || messageIds.contains(delivery.properties.messageId ?? "") {
                    let letter = DeadLetter(delivery, queue: queue)
                    guard let exchange = letter.originalExchange, let routingKey = letter.originalRoutingKey else {
                        print("skipped \(letter.messageId): its original exchange and routing key are unknown")
                        continue
                    }
                    var properties = delivery.properties
                    // The parked copy was published by the consumer; the event's own publisher is
                    // what its consumers check (the admin may set it: RabbitMQ's impersonator tag).
                    if let publisher = letter.originalUserId { properties.userId = publisher }
                    properties.headers = properties.headers.filter { !$0.key.hasPrefix("x-bazaar-") && !$0.key.hasPrefix("x-death") && !$0.key.hasPrefix("x-first-death") && !$0.key.hasPrefix("x-last-death") }
                    properties.headers["x-replayed-from"] = .string(queue)
                    try await connection.publish(
                        OutgoingMessage(exchange: exchange, routingKey: routingKey, body: delivery.body, properties: properties))
                    print("replayed \(letter.messageId) (\(letter.type)) to \(exchange) with \(routingKey)")
                    done.append(delivery)
                    replayed += 1
                }
                return done
            }
            if replayed == 0 { throw CLIError("nothing replayed: no matching dead letter in \(queues.queues.joined(separator: ", "))") }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print, then drop, every dead letter of the queue(s).")
        @OptionGroup var queues: QueueOptions

        func run() async throws {
            var dropped = 0
            try await DeadLetters.inspect(queues.queues) { queue, deliveries, _ in
                for delivery in deliveries { print("dropping " + DeadLetter(delivery, queue: queue).summary) }
                dropped += deliveries.count
                return deliveries
            }
            print("dropped \(dropped) dead letter(s)")
        }
    }
}

/// A dead letter as people and scripts see it.
struct DeadLetter: Codable {
    var queue: String
    var messageId: String
    var type: String
    var reason: String
    var error: String?
    var originalExchange: String?
    var originalRoutingKey: String?
    /// Who published the event, when the consumer that parked it says so.
    var originalUserId: String?
    var headers: [String: String]
    var body: String

    /// The `x-bazaar-*` headers are the consumer's account of what happened, trusted only when the
    /// consumer parked the message itself (its `user-id` is the queue's service's broker user):
    /// anything else could have been sent with such headers by its publisher.
    init(_ delivery: AMQPDelivery, queue: String, publisherUsers: PublisherUsers = DeadLetter.publisherUsers) {
        let owner = ServiceName.allCases.first { $0.deadLetterQueue == queue }
        let parkedByConsumer = owner.map { delivery.properties.userId == publisherUsers.user(of: $0) } ?? false
        let headers = parkedByConsumer ? delivery.headers : delivery.headers.filter { !$0.key.hasPrefix("x-bazaar-") }
        let death = headers["x-death"]?.array?.first?.table
        self.queue = queue
        originalUserId = headers["x-bazaar-original-user-id"]?.string
        messageId = delivery.properties.messageId ?? "(none)"
        type = delivery.properties.type ?? "?"
        reason = headers["x-bazaar-reason"]?.string ?? headers["x-first-death-reason"]?.string ?? "?"
        error = headers["x-bazaar-error"]?.string
        originalExchange = headers["x-bazaar-original-exchange"]?.string ?? death?["exchange"]?.string
        originalRoutingKey = headers["x-bazaar-original-routing-key"]?.string ?? death?["routing-keys"]?.array?.first?.string
        self.headers = headers.mapValues { "\($0)" }
        body = String(decoding: delivery.body, as: UTF8.self)
    }

    /// The services' broker users: `AMQP_PUBLISHER_USERS` as the services read it, or their names.
    static let publisherUsers = BazaarEnvironment.load().publisherUsers

    var summary: String {
        "\(queue)  \(messageId)  \(type)  \(reason)\(error.map { ": \($0.prefix(120))" } ?? "")"
    }

    var details: String {
        var lines = [
            "queue:        \(queue)", "message id:   \(messageId)", "type:         \(type)", "reason:       \(reason)",
            "error:        \(error ?? "-")", "was sent to:  \(originalExchange ?? "?") with \(originalRoutingKey ?? "?")", "headers:",
        ]
        lines += headers.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }
        lines += ["body:", body]
        return lines.joined(separator: "\n")
    }
}

/// Reads dead-letter queues without losing anything: takes every ready message, lets the caller
/// choose which to settle (ack), and puts the others back.
enum DeadLetters {
    /// `choose` gets each queue's messages and the connection (to publish replays on); it returns
    /// the messages to remove.
    static func inspect(
        _ queues: [String], _ choose: (String, [AMQPDelivery], AMQPConnection) async throws -> [AMQPDelivery]
    ) async throws {
        let environment = BazaarEnvironment.load()
        let configuration = try AMQPConfiguration(url: environment.amqpURL, connectionName: "bazaar-cli")
        let connection: AMQPConnection
        do {
            connection = try await AMQPConnection.connect(configuration, logger: cliLogger)
        } catch {
            throw CLIError("broker not reachable at \(configuration.redactedURL) — is the stack running? try `bazaar stack up`")
        }
        do {
            for queue in queues {
                let ready: Int
                do {
                    ready = try await connection.queueStatus(queue).messages
                } catch {
                    throw CLIError("no queue \(queue) (\(error)); dead-letter queues are order.dlq, inventory.dlq, payment.dlq, notification.dlq")
                }
                guard ready > 0 else { continue }
                let wanted = min(ready, 1000)
                if ready > wanted {
                    print("note: \(queue) holds \(ready) messages; this pass handles the first \(wanted) — run the command again for the rest")
                }
                let consumer = try await connection.consume(queue: queue, prefetch: UInt16(wanted))
                // Unacked messages go back to the queue when the connection closes, so a timeout loses nothing.
                let deliveries = try await withTimeout(.seconds(10), "reading \(queue)") {
                    var deliveries: [AMQPDelivery] = []
                    for try await delivery in consumer {
                        deliveries.append(delivery)
                        if deliveries.count == wanted { break }
                    }
                    return deliveries
                }
                let settled = Set(try await choose(queue, deliveries, connection).map(\.deliveryTag))
                for delivery in deliveries {
                    if settled.contains(delivery.deliveryTag) { try await delivery.ack() } else { try await delivery.nack(requeue: true) }
                }
                try await consumer.cancel()
            }
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }
}

/// Runs `body`, failing with a message naming `what` if it takes longer than `limit`.
func withTimeout<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw CLIError("timed out after \(limit) \(what)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
