import AMQP
import Contracts
import Foundation
import Logging
import Postgres

/// Consumes a service's queue and applies each event at most once, through the inbox.
///
/// For every delivery, in one database transaction: insert the event id into the inbox (a
/// duplicate insert does nothing, and then neither does the handler), run the handler, which
/// changes the service's tables and writes the events it emits to the outbox; commit. Only then
/// ack. So:
/// - a crash before the commit leaves nothing behind and the broker redelivers;
/// - a crash after the commit but before the ack leads to a redelivery that finds the inbox row
///   and is acked without effect;
/// - two instances handed the same event at once both try the insert; the primary key lets one
///   through and makes the other wait, then do nothing. The insert is the lock, not a check.
///
/// A message that can never succeed (not an envelope, an unknown event, data that does not
/// decode) is published to the service's dead-letter queue with the reason in its headers, and
/// acked only once the broker confirmed that copy. A failure that may pass (the database is
/// away) puts the message back in the queue after a pause; the queue's delivery limit bounds
/// how often.
public struct EventConsumer: Sendable {
    /// What happened to one delivery.
    public enum Outcome: Sendable, Equatable {
        case applied
        /// Already in the inbox: acked without effect.
        case duplicate
        case deadLettered(reason: String)
        /// Put back in the queue after a failure that may pass.
        case requeued(reason: String)
    }

    private let service: ServiceName
    private let outbox: Outbox
    private let inboxTable: String
    private let handlers: EventHandlers
    private let pool: PostgresPool
    private let publisher: AMQPConnection
    private let retryPause: Duration
    private let logger: Logger

    /// - Parameters:
    ///   - publisher: where dead letters are published (a service publishes on one connection and
    ///     consumes on another, so broker back-pressure on publishing never blocks acks).
    ///   - retryPause: the wait before a delivery that failed for a passing reason is requeued.
    public init(
        service: ServiceName, schema: String, handlers: EventHandlers, pool: PostgresPool, publisher: AMQPConnection,
        retryPause: Duration = .seconds(1), logger: Logger
    ) throws {
        self.service = service
        outbox = try Outbox(schema: schema)
        inboxTable = try PostgresIdentifier.quoted(schema) + ".inbox"
        self.handlers = handlers
        self.pool = pool
        self.publisher = publisher
        self.retryPause = retryPause
        var logger = logger
        logger[metadataKey: "component"] = "consumer"
        self.logger = logger
    }

    /// Handles deliveries one after another until the consumer ends or the task is cancelled.
    public func run(_ consumer: AMQPConsumer) async throws {
        for try await delivery in consumer {
            _ = await handle(delivery)
        }
    }

    /// Handles one delivery completely: effect, then ack (or dead letter, or requeue).
    public func handle(_ delivery: AMQPDelivery) async -> Outcome {
        let started = ContinuousClock.now
        var header: EnvelopeHeader?
        let outcome: Outcome
        do {
            let body = Data(delivery.body)
            header = try decodeHeader(body)
            try checkProvenance(header!, delivery)
            outcome = try await apply(body, header: header!) ? .applied : .duplicate
            // The effect is committed. If the ack can't be sent (the channel closed meanwhile),
            // the broker delivers the message again and the inbox makes that a no-op.
            do {
                try await delivery.ack()
            } catch {
                logger.notice("committed, but the ack was lost (\(error)); the redelivery will be skipped")
            }
        } catch let poison as PoisonMessage {
            outcome = await deadLetter(delivery, poison)
        } catch {
            outcome = .requeued(reason: "\(error)")
            try? await Task.sleep(for: retryPause)
            try? await delivery.nack(requeue: true)
        }
        log(outcome, header: header, delivery: delivery, duration: ContinuousClock.now - started)
        return outcome
    }

    private func decodeHeader(_ body: Data) throws -> EnvelopeHeader {
        do {
            return try EventJSON.decode(EnvelopeHeader.self, from: body)
        } catch {
            throw PoisonMessage.undecodable("not an event envelope: \(error)")
        }
    }

    /// Trusts what the broker vouches for, not what the payload claims: each service publishes
    /// only to its own exchange, so an envelope whose `source` (or event type) belongs to another
    /// exchange than the one it arrived on is forged or misrouted, and is parked.
    private func checkProvenance(_ header: EnvelopeHeader, _ delivery: AMQPDelivery) throws {
        guard header.source.exchange == delivery.exchange else {
            throw PoisonMessage.untrustedSource(
                "\(header.type) claims to come from \(header.source) but arrived on the \(delivery.exchange) exchange")
        }
        if let event = EventCatalogue.event(type: header.type, version: header.version), event.producer != header.source {
            throw PoisonMessage.untrustedSource("\(header.type) is published by \(event.producer), not \(header.source)")
        }
    }

    /// The inbox insert, the handler, the commit. Returns false for a duplicate.
    private func apply(_ body: Data, header: EnvelopeHeader) async throws -> Bool {
        guard let handler = handlers.handler(type: header.type, version: header.version) else {
            throw PoisonMessage.unknownEvent("\(service) does not handle \(header.type) v\(header.version)")
        }
        let (inboxTable, outbox, service) = (inboxTable, outbox, service)
        return try await pool.transaction { transaction in
            let inserted = try transaction.execute(
                """
                INSERT INTO \(inboxTable)
                    (event_id, event_type, event_version, source, correlation_id, causation_id, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (event_id) DO NOTHING
                """,
                header.eventId, header.type, header.version, header.source.rawValue, header.correlationId,
                header.causationId, header.occurredAt)
            guard inserted == 1 else { return false }
            try handler(body, HandlerContext(transaction: transaction, incoming: header, outbox: outbox, service: service))
            return true
        }
    }

    /// Parks a poison message in the service's dead-letter queue, with why, and acks the original
    /// once the copy is confirmed. If the copy can't be published, the original is rejected
    /// instead: the queue dead-letters it (without our reason headers, but not lost).
    private func deadLetter(_ delivery: AMQPDelivery, _ poison: PoisonMessage) async -> Outcome {
        var properties = delivery.properties
        properties.headers["x-bazaar-reason"] = .string(poison.kind)
        properties.headers["x-bazaar-error"] = .string(String(poison.detail.prefix(1000)))
        properties.headers["x-bazaar-service"] = .string(service.rawValue)
        properties.headers["x-bazaar-original-exchange"] = .string(delivery.exchange)
        properties.headers["x-bazaar-original-routing-key"] = .string(delivery.routingKey)
        properties.headers["x-bazaar-dead-lettered-at"] = .timestamp(Date())
        let copy = OutgoingMessage(
            exchange: service.deadLetterExchange, routingKey: service.deadLetterQueue, body: delivery.body,
            properties: properties)
        do {
            try await publisher.publish(copy)
            try await delivery.ack()
        } catch {
            logger.error("could not park a poison message, rejecting it instead: \(error)")
            try? await delivery.reject(requeue: false)
        }
        return .deadLettered(reason: poison.description)
    }

    private func log(_ outcome: Outcome, header: EnvelopeHeader?, delivery: AMQPDelivery, duration: Duration) {
        var metadata: Logger.Metadata = [
            "eventType": "\(header?.type ?? delivery.properties.type ?? "?")",
            "eventId": "\(header?.eventId.uuidString.lowercased() ?? delivery.properties.messageId ?? "?")",
            "duration": "\(duration)",
        ]
        if let header {
            metadata["orderId"] = "\(header.correlationId.uuidString.lowercased())"
            metadata["causationId"] = "\(header.causationId?.uuidString.lowercased() ?? "-")"
        }
        switch outcome {
        case .applied: logger.info("handled", metadata: metadata)
        case .duplicate: logger.info("duplicate, skipped", metadata: metadata)
        case .deadLettered(let reason): logger.error("dead-lettered: \(reason)", metadata: metadata)
        case .requeued(let reason): logger.warning("failed, requeued: \(reason)", metadata: metadata)
        }
    }
}
