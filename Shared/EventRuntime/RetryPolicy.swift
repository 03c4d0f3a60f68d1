import AMQP
import Contracts
import Foundation

/// How a consumer deals with failures; see `EventConsumer`.
public struct RetryPolicy: Sendable {
    /// Handler attempts before a message is parked, the first one included (`RETRY_MAX_ATTEMPTS`).
    public var maximumAttempts: Int
    /// The wait after each failure: the n-th failure waits the n-th delay, the last one from then
    /// on. They are the retry queues' TTLs, so they must be `ServiceTopology.retryDelays`.
    public let delays = ServiceTopology.retryDelays
    /// Bigger messages are parked unread: no event comes near it, and decoding one costs memory.
    public var maximumMessageBytes: Int
    /// The first pause before trying a delivery again while the database is away; it doubles up
    /// to `databasePauseMaximum`.
    public var databasePauseInitial: Duration
    public var databasePauseMaximum: Duration

    public init(
        maximumAttempts: Int = 5, maximumMessageBytes: Int = 256 * 1024,
        databasePauseInitial: Duration = .milliseconds(250), databasePauseMaximum: Duration = .seconds(5)
    ) {
        self.maximumAttempts = maximumAttempts
        self.maximumMessageBytes = maximumMessageBytes
        self.databasePauseInitial = databasePauseInitial
        self.databasePauseMaximum = databasePauseMaximum
    }

    /// The delay after the `attempt`-th failure (from 1).
    public func delay(afterFailure attempt: Int) -> Duration {
        delays[min(max(attempt, 1), delays.count) - 1]
    }
}

/// What a delivery says about its earlier attempts, in the headers a consumer sets when it sends
/// the delivery to a retry queue.
struct RetryState {
    struct Origin {
        var exchange: String
        var routingKey: String
        /// The broker-validated `user-id` of the first publisher.
        var userId: String?
    }

    /// Where the message was first published, and by whom. A message back from a retry queue
    /// arrives through the service's retry exchange, published by the service itself (its
    /// `user-id` says so, and only the service may publish there); its headers say where it came
    /// from, and are trusted for that reason.
    let origin: Origin
    /// Failed attempts so far.
    let attempts: Int
    let firstFailureAt: Date?
    private let properties: AMQPProperties

    /// - Parameter ownUser: the broker user this service publishes its retries as.
    init(_ delivery: AMQPDelivery, service: ServiceName, ownUser: String) throws(PoisonMessage) {
        properties = delivery.properties
        let headers = delivery.properties.headers
        guard delivery.exchange == service.retryExchange else {
            // A replay (`OutboxReplay`) comes through the default exchange, naming the exchange the
            // event was first published to; it is checked against the envelope as that exchange
            // would be. The `user-id` is checked as for any delivery, and only the producer or an
            // admin with the impersonator tag can set it (services may not write to the default
            // exchange), so the header is the admin's word, not a stranger's.
            let replayedFrom = delivery.exchange.isEmpty ? headers[OutboxReplay.exchangeHeader]?.string : nil
            origin = Origin(
                exchange: replayedFrom ?? delivery.exchange,
                routingKey: replayedFrom == nil ? delivery.routingKey : headers[OutboxReplay.routingKeyHeader]?.string ?? delivery.routingKey,
                userId: delivery.properties.userId)
            attempts = 0
            firstFailureAt = nil
            return
        }
        guard delivery.properties.userId == ownUser else {
            throw .untrustedSource(
                "a message on the retry exchange published by \(delivery.properties.userId ?? "an unnamed user"), not by \(ownUser)")
        }
        guard let exchange = headers["x-bazaar-original-exchange"]?.string,
            let routingKey = headers["x-bazaar-original-routing-key"]?.string
        else {
            throw .untrustedSource("a message from the retry exchange without its original exchange and routing key")
        }
        origin = Origin(exchange: exchange, routingKey: routingKey, userId: headers["x-bazaar-original-user-id"]?.string)
        attempts = Int(headers["x-bazaar-attempts"]?.int ?? 0)
        if case .timestamp(let date) = headers["x-bazaar-first-failure-at"] { firstFailureAt = date } else { firstFailureAt = nil }
    }

    /// The delivery's properties for its copy after a failure, published as `ownUser`: where it
    /// came from and who sent it and, when the handler failed (`attempt` given), how often and when.
    func properties(afterFailure attempt: Int?, error: String, ownUser: String) -> AMQPProperties {
        var properties = self.properties
        properties.userId = ownUser
        properties.headers["x-bazaar-original-exchange"] = .string(origin.exchange)
        properties.headers["x-bazaar-original-routing-key"] = .string(origin.routingKey)
        properties.headers["x-bazaar-original-user-id"] = origin.userId.map { .string($0) }
        properties.headers["x-bazaar-error"] = .string(String(error.prefix(1000)))
        if let attempt {
            let now = Date()
            properties.headers["x-bazaar-attempts"] = .int(Int64(attempt))
            properties.headers["x-bazaar-first-failure-at"] = .timestamp(firstFailureAt ?? now)
            properties.headers["x-bazaar-last-failure-at"] = .timestamp(now)
        }
        return properties
    }
}
