import Foundation
import Logging

/// A connection to RabbitMQ that survives the broker going away.
///
/// Safe to share between tasks: each method hands its work to the connection's own thread (see
/// `ConnectionLoop` for the design) and awaits the result. After a lost connection it
/// reconnects by itself, declares again everything declared through it, and resumes its
/// consumers; while it is away, calls fail fast with ``AMQPError/notConnected``.
///
/// RabbitMQ applies back-pressure to publishing connections (a memory alarm blocks them), so a
/// service publishes on one connection and consumes on another, and a blocked publisher never
/// stalls acks.
///
/// ```swift
/// let connection = try await AMQPConnection.connect(AMQPConfiguration(url: amqpURL), logger: logger)
/// try await connection.declare(Topology(exchanges: [ExchangeSpec(name: "orders")]))
/// try await connection.publish(OutgoingMessage(exchange: "orders", routingKey: "order.placed.v1", body: body))
/// ```
public final class AMQPConnection: Sendable {
    private let loop: ConnectionLoop

    private init(loop: ConnectionLoop) {
        self.loop = loop
    }

    /// Opens a connection; throws if the broker can't be reached or refuses the login now.
    /// (Once open, the connection reconnects by itself.)
    public static func connect(_ configuration: AMQPConfiguration, logger: Logger) async throws -> AMQPConnection {
        let loop = ConnectionLoop(configuration: configuration, logger: logger)
        try await loop.start()
        return AMQPConnection(loop: loop)
    }

    /// The user this connection logged in as: the broker checks that a message's `user-id`
    /// property, if set, is this user, so consumers can trust it as the publisher's identity.
    public var user: String { loop.configuration.user }

    /// Connected, reconnecting (and why), or closed.
    public var status: ConnectionStatus { loop.status.withLock { $0 } }

    /// How many times the connection was lost and replaced since it was opened.
    public var reconnectCount: Int { loop.reconnects.load(ordering: .relaxed) }

    /// Closes the connection: consumers' streams finish, waiting publishes fail with ``AMQPError/closed``.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            loop.submit { loop in
                loop.requestStop()
                continuation.resume()
            }
        }
    }

    /// Runs `work` on the connection's thread and returns its result.
    private func perform<T: Sendable>(_ work: @escaping @Sendable (ConnectionLoop) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            loop.submit { loop in continuation.resume(with: Result { try work(loop) }) }
        }
    }

    // MARK: Topology

    /// Declares exchanges, queues and bindings, and remembers them to declare them again after a
    /// reconnect. A declaration that contradicts what exists (other type or arguments) fails
    /// with ``AMQPError/channelClosed(replyCode:replyText:)`` 406 and changes nothing.
    public func declare(_ topology: Topology) async throws {
        try await perform { loop in try loop.declare(topology) }
    }

    /// The number of ready messages and of consumers of an existing queue.
    public func queueStatus(_ queue: String) async throws -> (messages: Int, consumers: Int) {
        let counts = try await perform { loop in try loop.withSession { try $0.inspectQueue(queue) } }
        return (counts.messages, counts.consumers)
    }

    /// Drops every ready message of a queue; returns how many.
    @discardableResult
    public func purgeQueue(_ queue: String) async throws -> Int {
        try await perform { loop in try loop.withSession { try $0.purgeQueue(queue) } }
    }

    public func deleteQueue(_ queue: String) async throws {
        try await perform { loop in try loop.withSession { try $0.deleteQueue(queue) } }
    }

    public func deleteExchange(_ exchange: String) async throws {
        try await perform { loop in try loop.withSession { try $0.deleteExchange(exchange) } }
    }

    // MARK: Publishing

    /// Publishes one message and waits for the broker's confirm.
    ///
    /// Throws ``AMQPError/unroutable(replyCode:replyText:)`` when a `mandatory` message matched no
    /// queue, ``AMQPError/nacked`` when the broker refused it, and
    /// ``AMQPError/confirmLost(reason:)`` when the connection went away first (the broker may or may
    /// not have it: publish again, and let consumers deduplicate).
    public func publish(_ message: OutgoingMessage) async throws {
        let outcome = await publish(batch: [message])[0]
        if let error = outcome.error { throw error }
    }

    /// Publishes messages back to back and waits once for all their confirms: far faster than
    /// one by one. Returns one outcome per message, in order. Never throws: a message that could
    /// not be published has a `.failed` outcome.
    ///
    /// A message without a message id is given one (a UUID): the broker returns unroutable
    /// messages without their delivery tag, and the id is how a return finds its publish.
    ///
    /// `afterSending` runs on the connection's thread once every message is written to the
    /// socket and before any confirm is read: the chaos suite crashes the process there.
    public func publish(
        batch messages: [OutgoingMessage], afterSending: (@Sendable () -> Void)? = nil
    ) async -> [PublishOutcome] {
        let messages = messages.map { message in
            var message = message
            if message.properties.messageId == nil { message.properties.messageId = UUID().uuidString.lowercased() }
            return message
        }
        return await withCheckedContinuation { continuation in
            loop.submit { loop in
                loop.publish(messages, batch: PublishBatch(count: messages.count, continuation: continuation))
                afterSending?()
            }
        }
    }

    // MARK: Consuming

    /// Starts consuming `queue` with manual acknowledgements.
    ///
    /// - Parameters:
    ///   - prefetch: how many unacknowledged deliveries the broker may send ahead (`basic.qos`).
    ///   - consumerTag: names the consumer in the broker; unique per connection.
    /// - Returns: the deliveries, across reconnects, until ``AMQPConsumer/cancel()`` or
    ///   ``close()``. Every delivery must be acked, nacked or rejected.
    public func consume(queue: String, prefetch: UInt16 = 10, consumerTag: String? = nil) async throws -> AMQPConsumer {
        let tag = consumerTag ?? "\(loop.configuration.connectionName).\(queue).\(UUID().uuidString.prefix(8).lowercased())"
        let (stream, continuation) = AsyncThrowingStream<AMQPDelivery, any Error>.makeStream()
        try await perform { [self] loop in
            try loop.addConsumer(queue: queue, prefetch: prefetch, consumerTag: tag, stream: continuation, connection: self)
        }
        return AMQPConsumer(tag: tag, queue: queue, deliveries: stream, connection: self)
    }

    func cancelConsumer(_ tag: String) async throws {
        try await perform { loop in try loop.cancelConsumer(tag) }
    }

    func settle(_ receipt: DeliveryReceipt, _ action: DeliverySettlement) async throws {
        try await perform { loop in try loop.settle(receipt, action) }
    }

    /// Acks each receipt in one visit to the connection's thread; the error of each that failed.
    func ack(_ receipts: [DeliveryReceipt]) async -> [(any Error)?] {
        await withCheckedContinuation { continuation in
            loop.submit { loop in
                continuation.resume(returning: receipts.map { receipt in
                    do {
                        try loop.settle(receipt, .ack)
                        return nil
                    } catch {
                        return error
                    }
                })
            }
        }
    }
}

/// The deliveries of one queue to one consumer.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery

    /// The consumer tag the broker knows this consumer by.
    public let tag: String
    public let queue: String
    fileprivate let deliveries: AsyncThrowingStream<AMQPDelivery, any Error>
    fileprivate let connection: AMQPConnection

    public func makeAsyncIterator() -> AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator {
        deliveries.makeAsyncIterator()
    }

    /// Stops the deliveries; unacknowledged ones go back to the queue.
    public func cancel() async throws {
        try await connection.cancelConsumer(tag)
    }
}

/// Identifies a delivery for its ack: the channel incarnation it came on and its tag there.
struct DeliveryReceipt: Sendable {
    let connection: AMQPConnection
    let channel: UInt16
    let incarnation: UInt64
    let deliveryTag: UInt64
}

/// A message delivered to a consumer. Ack it once its effect is committed, never before.
public struct AMQPDelivery: Sendable {
    public let exchange: String
    public let routingKey: String
    public let body: [UInt8]
    public let properties: AMQPProperties
    /// The broker delivered it before and it was not acked (a consumer died, a connection
    /// dropped): its effect may already be applied.
    public let redelivered: Bool
    public let deliveryTag: UInt64
    public let consumerTag: String
    private let receipt: DeliveryReceipt

    init(_ inbound: InboundDelivery, receipt: DeliveryReceipt) {
        exchange = inbound.exchange
        routingKey = inbound.routingKey
        body = inbound.body
        properties = inbound.properties
        redelivered = inbound.redelivered
        deliveryTag = inbound.deliveryTag
        consumerTag = inbound.consumerTag
        self.receipt = receipt
    }

    public var headers: AMQPTable { properties.headers }

    /// Done with it: the broker forgets the message.
    /// Throws ``AMQPError/staleDelivery`` if its channel closed meanwhile (it will be redelivered).
    public func ack() async throws { try await receipt.connection.settle(receipt, .ack) }

    /// Acks several deliveries as `ack()` does each, with one hand-over to each connection's
    /// thread instead of one per delivery (a batch committed together is acked together).
    /// Returns, in order, the error of each ack that failed, nil for those that went out.
    public static func ack(_ deliveries: [AMQPDelivery]) async -> [(any Error)?] {
        var errors = [(any Error)?](repeating: nil, count: deliveries.count)
        var byConnection: [ObjectIdentifier: [Int]] = [:]
        for (index, delivery) in deliveries.enumerated() {
            byConnection[ObjectIdentifier(delivery.receipt.connection), default: []].append(index)
        }
        for indices in byConnection.values {
            let connection = deliveries[indices[0]].receipt.connection
            let outcomes = await connection.ack(indices.map { deliveries[$0].receipt })
            for (index, error) in zip(indices, outcomes) { errors[index] = error }
        }
        return errors
    }

    /// Failed: back to the queue (`requeue`), or to the queue's dead-letter exchange.
    public func nack(requeue: Bool) async throws { try await receipt.connection.settle(receipt, .nack(requeue: requeue)) }

    /// As `nack`, in the protocol's older single-message form.
    public func reject(requeue: Bool) async throws {
        try await receipt.connection.settle(receipt, .reject(requeue: requeue))
    }
}
