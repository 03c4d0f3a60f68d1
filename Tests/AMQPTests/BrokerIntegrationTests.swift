import Foundation
import Logging
import TestSupport
import Testing

@testable import AMQP

/// Against the real RabbitMQ of the local stack. Serialized: some tests close every connection
/// of the broker or restart it, which would disturb tests running beside them.
@Suite("AMQP client against RabbitMQ", .serialized, .timeLimit(.minutes(2)))
struct BrokerIntegrationTests {
    @Test func publishedMessagesRoundTripWithTheirPropertiesAndHeaders() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let sent = AMQPProperties(
                contentType: "application/json", headers: ["x-trace": "abc", "x-attempt": 3, "x-flag": true],
                correlationId: "order-42", messageId: "0b9e6a5e-1c1a-4c3e-9d43-7f1f0c1f3a11",
                timestamp: Date(timeIntervalSince1970: 1_800_000_000), type: "OrderPlaced", appId: "order")
            try await broker.connection.publish(
                OutgoingMessage(
                    exchange: exchange, routingKey: "order.placed.v1", body: Array(#"{"n":1}"#.utf8), properties: sent))

            let delivery = try await next(from: try await broker.connection.consume(queue: queue))
            #expect(delivery.body == Array(#"{"n":1}"#.utf8))
            #expect(delivery.properties == sent)
            #expect(delivery.exchange == exchange)
            #expect(delivery.routingKey == "order.placed.v1")
            #expect(!delivery.redelivered)
            try await delivery.ack()
            #expect(try await broker.connection.queueStatus(queue).messages == 0)
        }
    }

    @Test func aBatchIsConfirmedAndEveryMessageArrivesInOrder() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let messages = (0..<500).map {
                OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: Array("\($0)".utf8))
            }
            let outcomes = await broker.connection.publish(batch: messages)
            #expect(outcomes == Array(repeating: .confirmed, count: 500))

            let consumer = try await broker.connection.consume(queue: queue, prefetch: 50)
            let bodies = try await within(.seconds(20)) {
                var bodies: [String] = []
                for try await delivery in consumer {
                    bodies.append(String(decoding: delivery.body, as: UTF8.self))
                    try await delivery.ack()
                    if bodies.count == 500 { break }
                }
                return bodies
            }
            #expect(bodies == (0..<500).map { "\($0)" })
        }
    }

    @Test func anUnroutableMandatoryMessageIsReportedToThePublisher() async throws {
        try await withBroker { broker in
            let exchange = try await broker.exchange()
            await #expect(throws: AMQPError.unroutable(replyCode: 312, replyText: "NO_ROUTE")) {
                try await broker.connection.publish(
                    OutgoingMessage(exchange: exchange, routingKey: "nobody.listens", body: [1]))
            }
            // In a batch, only the unroutable message is reported.
            _ = try await broker.queue(boundTo: exchange, pattern: "listened")
            let outcomes = await broker.connection.publish(batch: [
                OutgoingMessage(exchange: exchange, routingKey: "listened", body: [1]),
                OutgoingMessage(exchange: exchange, routingKey: "nobody.listens", body: [2]),
                OutgoingMessage(exchange: exchange, routingKey: "listened", body: [3]),
            ])
            #expect(outcomes == [.confirmed, .returned(replyCode: 312, replyText: "NO_ROUTE"), .confirmed])
        }
    }

    @Test func aMessageTheBrokerRefusesIsReportedAsNacked() async throws {
        try await withBroker { broker in
            let exchange = try await broker.exchange()
            // A queue that holds one message and refuses more: the broker nacks the overflow. (Classic:
            // a quorum queue enforces its length limit only approximately.)
            let queue = "test.full.\(UUID().uuidString.prefix(8))"
            try await broker.connection.declare(
                Topology(
                    queues: [QueueSpec(name: queue, kind: .classic, extraArguments: ["x-max-length": 1, "x-overflow": "reject-publish"])],
                    bindings: [BindingSpec(queue: queue, exchange: exchange, routingKey: "#")]))
            defer { Task { try? await broker.connection.deleteQueue(queue) } }
            let outcomes = await broker.connection.publish(batch: [
                OutgoingMessage(exchange: exchange, routingKey: "k", body: [1]),
                OutgoingMessage(exchange: exchange, routingKey: "k", body: [2]),
            ])
            #expect(outcomes == [.confirmed, .nacked])
            await #expect(throws: AMQPError.nacked) {
                try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "k", body: [3]))
            }
        }
    }

    @Test func publishingToAMissingExchangeFailsThatPublishOnly() async throws {
        try await withBroker { broker in
            let (exchange, _) = try await broker.exchangeWithQueue()
            await #expect {
                try await broker.connection.publish(
                    OutgoingMessage(exchange: "test.missing.\(UUID())", routingKey: "k", body: [1]))
            } throws: { error in
                guard case AMQPError.confirmLost(let reason) = error else { return false }
                return reason.contains("404") && reason.contains("NOT_FOUND")
            }
            // The publishing channel was re-opened: the next publish goes through.
            try await broker.connection.publish(
                OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [2]))
        }
    }

    @Test func aContradictoryDeclarationFailsWithTheBrokersReasonAndChangesNothing() async throws {
        try await withBroker { broker in
            let (_, queue) = try await broker.exchangeWithQueue()
            await #expect {
                try await broker.connection.declare(Topology(queues: [QueueSpec(name: queue, kind: .classic)]))
            } throws: { error in
                (error as? AMQPError)?.replyCode == 406 && "\(error)".contains("PRECONDITION_FAILED")
            }
            // The connection stays usable and the queue is still the quorum queue it was.
            #expect(try await broker.connection.queueStatus(queue).messages == 0)
            try await broker.connection.declare(Topology(queues: [QueueSpec(name: queue)]))
        }
    }

    @Test func aRejectedMessageIsDeadLetteredWithTheBrokersXDeathHeader() async throws {
        try await withBroker { broker in
            let exchange = try await broker.exchange()
            let deadLetters = try await broker.exchange()
            let parked = try await broker.queue(boundTo: deadLetters, pattern: "parked")
            let queue = try await broker.queue(
                boundTo: exchange, pattern: "#",
                deadLetterExchange: deadLetters, deadLetterRoutingKey: "parked", deliveryLimit: 5)
            try await broker.connection.publish(
                OutgoingMessage(
                    exchange: exchange, routingKey: "payment.declined.v1", body: Array("poison".utf8),
                    properties: AMQPProperties(headers: ["x-reason": "undecodable"], messageId: "m-1")))

            let delivery = try await next(from: try await broker.connection.consume(queue: queue))
            try await delivery.reject(requeue: false)

            let deadLetter = try await next(from: try await broker.connection.consume(queue: parked))
            try await deadLetter.ack()
            #expect(deadLetter.body == Array("poison".utf8))
            #expect(deadLetter.properties.messageId == "m-1")
            #expect(deadLetter.headers["x-reason"] == "undecodable")
            #expect(deadLetter.headers["x-first-death-reason"] == "rejected")
            let death = try #require(deadLetter.headers["x-death"]?.array?.first?.table)
            #expect(death["reason"] == "rejected")
            #expect(death["queue"]?.string == queue)
            #expect(death["exchange"]?.string == exchange)
            #expect(death["count"] == 1)
        }
    }

    @Test func aNackedDeliveryComesBackMarkedRedelivered() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [7]))
            let consumer = try await broker.connection.consume(queue: queue, prefetch: 1)
            let deliveries = try await within(.seconds(10)) {
                var deliveries: [AMQPDelivery] = []
                for try await delivery in consumer {
                    deliveries.append(delivery)
                    if deliveries.count == 1 {
                        try await delivery.nack(requeue: true)
                    } else {
                        try await delivery.ack()
                        break
                    }
                }
                return deliveries
            }
            #expect(deliveries.map(\.redelivered) == [false, true])
            #expect(deliveries.map(\.body) == [[7], [7]])
        }
    }

    @Test func prefetchBoundsWhatTheBrokerSendsAhead() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let outcomes = await broker.connection.publish(
                batch: (0..<5).map { OutgoingMessage(exchange: exchange, routingKey: "order.x", body: [UInt8($0)]) })
            #expect(outcomes.allSatisfy { $0 == .confirmed })
            let consumer = try await broker.connection.consume(queue: queue, prefetch: 2)
            let first = try await next(from: consumer)
            _ = try await next(from: consumer)
            // Two unacked: the broker holds the other three back until one is acked.
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await broker.connection.queueStatus(queue).messages == 3)
            try await first.ack()
            #expect(try await next(from: consumer).body == [2])
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await broker.connection.queueStatus(queue).messages == 2)
        }
    }

    @Test func aConsumerWhoseChannelTheBrokerClosesCarriesOn() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let consumer = try await broker.connection.consume(queue: queue)
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.a", body: [1]))
            let delivery = try await next(from: consumer)
            try await delivery.ack()
            // A second ack of the same tag is a protocol error: the broker closes that channel (406).
            try await delivery.ack()
            try await Task.sleep(for: .milliseconds(200))

            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.b", body: [2]))
            let after = try await next(from: consumer)
            #expect(after.body == [2])
            try await after.ack()
            #expect(broker.connection.status == .connected)
            #expect(broker.connection.reconnectCount == 0)
        }
    }

    @Test func theBrokerShowsTheConnectionName() async throws {
        let name = "amqp-tests.\(UUID().uuidString.prefix(8))"
        try await withBroker(connectionName: name) { _ in
            let listing = try StackEnvironment.run(
                try StackEnvironment.rabbitmqctl, ["-q", "list_connections", "client_properties"])
            #expect(listing.contains(name))
        }
    }

    @Test func afterTheBrokerClosesEveryConnectionTheClientReconnectsAndConsumesAgain() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let consumer = try await broker.connection.consume(queue: queue)
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [1]))
            try await next(from: consumer).ack()

            try await waitUntilReconnected(broker.connection) {
                try StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "close_all_connections", "test: broker going away"])
            }

            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [2]))
            let after = try await next(from: consumer)
            #expect(after.body == [2])
            try await after.ack()
        }
    }

    @Test func theTopologyIsDeclaredAgainAfterAReconnect() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            // Someone deletes our exchange (and so the binding) behind our back…
            try await withBroker(connectionName: "amqp-tests.vandal") { vandal in
                try await vandal.connection.deleteExchange(exchange)
            }
            await #expect(throws: AMQPError.self) {
                try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.x", body: [1]))
            }
            // …a reconnect declares exchange, queue and binding again.
            try await waitUntilReconnected(broker.connection) {
                try StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "close_all_connections", "test: redeclare"])
            }
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.x", body: [2]))
            #expect(try await broker.connection.queueStatus(queue).messages == 1)
        }
    }

    @Test func aDeliveryFromBeforeAReconnectCannotBeAckedAndComesBack() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let consumer = try await broker.connection.consume(queue: queue, prefetch: 1)
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [9]))
            let first = try await next(from: consumer)

            try await waitUntilReconnected(broker.connection) {
                try StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "close_all_connections", "test: stale ack"])
            }

            await #expect(throws: AMQPError.staleDelivery) { try await first.ack() }
            let again = try await next(from: consumer)
            #expect(again.body == [9])
            #expect(again.redelivered)
            try await again.ack()
        }
    }

    @Test func aBrokerRestartIsSurvived() async throws {
        try await withBroker { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let consumer = try await broker.connection.consume(queue: queue)
            let rabbitmqctl = try StackEnvironment.rabbitmqctl
            try await waitUntilReconnected(broker.connection, within: .seconds(60)) {
                try StackEnvironment.run(rabbitmqctl, ["-q", "stop_app"])
                try StackEnvironment.run(rabbitmqctl, ["-q", "start_app"])
                try StackEnvironment.run(rabbitmqctl, ["-q", "await_startup"])
            }

            // The durable queue and its binding survived; the consumer resumed on its own.
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [3]))
            let delivery = try await next(from: consumer)
            #expect(delivery.body == [3])
            try await delivery.ack()
        }
    }

    @Test func aSilentConnectionIsDetectedByHeartbeatsAndReplaced() async throws {
        // A proxy that stops forwarding bytes without closing anything: no error, no EOF, only silence.
        var direct = try AMQPConfiguration(url: try StackEnvironment.amqpURL)
        let proxy = try TCPProxy(upstreamPort: direct.port)
        defer { proxy.stop() }
        direct.port = proxy.port
        direct.heartbeat = 1
        direct.connectTimeout = .seconds(1)
        direct.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
        let connection = try await AMQPConnection.connect(direct, logger: Logger(label: "amqp-tests"))
        let broker = TestBroker(connection: connection)
        do {
            let (exchange, queue) = try await broker.exchangeWithQueue()
            let consumer = try await connection.consume(queue: queue)
            try await waitUntilReconnected(connection) {
                proxy.freeze()
            } whileAway: {
                #expect(await connection.statusBecomesReconnecting(within: .seconds(5)))
                proxy.thaw()
            }
            try await connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.placed.v1", body: [5]))
            #expect(try await next(from: consumer).body == [5])
        } catch {
            await broker.tearDown()
            throw error
        }
        await broker.tearDown()
    }

    @Test func anUnreachableBrokerFailsTheFirstConnectClearly() async throws {
        var configuration = try AMQPConfiguration(url: "amqp://u:p@127.0.0.1:1/")
        configuration.connectTimeout = .seconds(2)
        await #expect {
            _ = try await AMQPConnection.connect(configuration, logger: Logger(label: "amqp-tests"))
        } throws: { error in
            guard case AMQPError.library(_, _, let during) = error else { return false }
            return during.contains("127.0.0.1:1")
        }
    }

    @Test func wrongCredentialsAreRefused() async throws {
        var configuration = try AMQPConfiguration(url: try StackEnvironment.amqpURL)
        configuration.password = "not-the-password"
        await #expect(throws: AMQPError.self) {
            _ = try await AMQPConnection.connect(configuration, logger: Logger(label: "amqp-tests"))
        }
    }

    @Test func tlsWorksEndToEndWithTheStacksCertificateAuthority() async throws {
        try await withBroker(url: try StackEnvironment.amqpsURL) { broker in
            let (exchange, queue) = try await broker.exchangeWithQueue()
            try await broker.connection.publish(OutgoingMessage(exchange: exchange, routingKey: "order.tls", body: [42]))
            let delivery = try await next(from: try await broker.connection.consume(queue: queue))
            #expect(delivery.body == [42])
            try await delivery.ack()
        }

        // Without the stack's CA the broker's certificate is not trusted: no connection.
        var configuration = try AMQPConfiguration(url: try StackEnvironment.amqpsURL)
        #expect(configuration.tls?.verifyPeer == true)
        configuration.tls?.caCertificatePath = nil
        await #expect(throws: AMQPError.self) {
            _ = try await AMQPConnection.connect(configuration, logger: Logger(label: "amqp-tests"))
        }
    }

    @Test func theGuestUserDoesNotExist() async throws {
        var configuration = try AMQPConfiguration(url: try StackEnvironment.amqpURL)
        (configuration.user, configuration.password) = ("guest", "guest")
        await #expect(throws: AMQPError.self) {
            _ = try await AMQPConnection.connect(configuration, logger: Logger(label: "amqp-tests"))
        }
    }

    // MARK: Helpers

    /// The next delivery. (A timeout ends the consumer's stream: AsyncStream finishes when the
    /// task waiting on it is cancelled. Fine here, where a timeout fails the test.)
    private func next(from consumer: AMQPConsumer) async throws -> AMQPDelivery {
        try await within(.seconds(15)) {
            var iterator = consumer.makeAsyncIterator()
            guard let delivery = try await iterator.next() else { throw ConsumerEnded() }
            return delivery
        }
    }

    /// Injects `fault`, runs `whileAway`, then waits until the connection has been replaced and is up again.
    private func waitUntilReconnected(
        _ connection: AMQPConnection, within limit: Duration = .seconds(20), after fault: () throws -> Void,
        whileAway: () async throws -> Void = {}
    ) async throws {
        let before = connection.reconnectCount
        try fault()
        try await whileAway()
        try await within(limit) {
            while connection.reconnectCount == before || connection.status != .connected {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}

struct ConsumerEnded: Error {}

extension AMQPConnection {
    /// Whether the connection notices, within `limit`, that it lost the broker.
    func statusBecomesReconnecting(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if case .reconnecting = status { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// Runs `body` with a fresh connection, then deletes what it declared and closes the connection.
func withBroker(
    url: String? = nil, connectionName: String = "amqp-tests", _ body: (TestBroker) async throws -> Void
) async throws {
    var configuration = try AMQPConfiguration(url: try url ?? StackEnvironment.amqpURL, connectionName: connectionName)
    configuration.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .seconds(1))
    let connection = try await AMQPConnection.connect(configuration, logger: Logger(label: "amqp-tests"))
    let broker = TestBroker(connection: connection)
    do {
        try await body(broker)
    } catch {
        await broker.tearDown()
        throw error
    }
    await broker.tearDown()
}

/// Declares uniquely named exchanges and queues for one test, so tests never see each other's.
final class TestBroker: @unchecked Sendable {
    // @unchecked: used by one test at a time, from its own task.
    let connection: AMQPConnection
    private(set) var exchanges: [String] = []
    private(set) var queues: [String] = []

    init(connection: AMQPConnection) { self.connection = connection }

    private func uniqueName(_ kind: String) -> String { "test.\(kind).\(UUID().uuidString.prefix(8).lowercased())" }

    func exchange() async throws -> String {
        let name = uniqueName("exchange")
        try await connection.declare(Topology(exchanges: [ExchangeSpec(name: name)]))
        exchanges.append(name)
        return name
    }

    func queue(
        boundTo exchange: String, pattern: String = "order.#", deadLetterExchange: String? = nil,
        deadLetterRoutingKey: String? = nil, deliveryLimit: Int? = nil
    ) async throws -> String {
        let name = uniqueName("queue")
        try await connection.declare(
            Topology(
                queues: [
                    QueueSpec(
                        name: name, deadLetterExchange: deadLetterExchange, deadLetterRoutingKey: deadLetterRoutingKey,
                        deliveryLimit: deliveryLimit)
                ],
                bindings: [BindingSpec(queue: name, exchange: exchange, routingKey: pattern)]))
        queues.append(name)
        return name
    }

    /// A topic exchange with a quorum queue bound for `order.#`.
    func exchangeWithQueue() async throws -> (exchange: String, queue: String) {
        let exchange = try await exchange()
        return (exchange, try await queue(boundTo: exchange))
    }

    func tearDown() async {
        for queue in queues { try? await connection.deleteQueue(queue) }
        for exchange in exchanges { try? await connection.deleteExchange(exchange) }
        await connection.close()
    }
}
