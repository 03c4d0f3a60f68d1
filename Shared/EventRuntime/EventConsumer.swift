import AMQP
import Contracts
import Foundation
import Logging
import Postgres
import ServiceContextModule
import Tracing

/// Consumes a service's queue and applies each event at most once, through the inbox.
///
/// For every delivery, in one database transaction: insert the event id into the inbox (a
/// duplicate insert does nothing, and then neither does the handler), run the handler, which
/// changes the service's tables and writes the events it emits to the outbox; commit. Only then
/// ack. (Deliveries that arrive together share one such transaction: `handle(batch:)`.) So:
/// - a crash before the commit leaves nothing behind and the broker redelivers;
/// - a crash after the commit but before the ack leads to a redelivery that finds the inbox row
///   and is acked without effect;
/// - two instances handed the same event at once both try the insert; the primary key lets one
///   through and makes the other wait, then do nothing. The insert is the lock, not a check.
///
/// When something goes wrong, what happens depends on whether trying again can help:
/// - **The database is away** (unreachable, restarting, the session killed) or the transaction
///   lost a race (deadlock, serialization failure): the same delivery is tried again in place,
///   with growing pauses, until the database answers. Nothing is counted against the message:
///   it did nothing wrong, and every other message would fail the same way meanwhile.
/// - **The handler failed**: the message goes to the service's retry queue for its attempt,
///   comes back after that queue's delay, and after `RetryPolicy.maximumAttempts` is parked in
///   the dead-letter queue with the error, the attempts and the first and last failure times.
/// - **The message can never succeed** (too big, not an envelope, an unknown event, data that
///   does not decode, a forged source): parked at once, without retries.
/// A message is acked only once its copy (retry or parked) is confirmed by the broker; if the copy
/// can't be published, the message is put back in the queue instead.
public struct EventConsumer: Sendable {
    /// What happened to one delivery.
    public enum Outcome: Sendable, Equatable {
        case applied
        /// Already in the inbox: acked without effect.
        case duplicate
        /// Parked in the dead-letter queue.
        case deadLettered(reason: String)
        /// Sent to a retry queue, to come back after `delay`.
        case retryScheduled(attempt: Int, delay: Duration)
        /// Put back in the queue (a retry or dead-letter copy could not be published), or left
        /// to the broker to redeliver (the service is shutting down).
        case requeued(reason: String)
    }

    let service: ServiceName
    let outbox: Outbox
    let inboxTable: String
    let handlers: EventHandlers
    let pool: PostgresPool
    let publisher: AMQPConnection
    let policy: RetryPolicy
    let publisherUsers: PublisherUsers
    let faults: FaultInjection
    let logger: Logger
    /// The most deliveries applied in one transaction; 1 applies each in its own.
    let batchLimit: Int

    /// - Parameters:
    ///   - publisher: where retries and dead letters are published (a service publishes on one
    ///     connection and consumes on another, so broker back-pressure on publishing never
    ///     blocks acks).
    ///   - publisherUsers: the broker user expected to publish each service's events.
    ///   - batchLimit: the most deliveries that have arrived together applied in one transaction.
    public init(
        service: ServiceName, schema: String, handlers: EventHandlers, pool: PostgresPool, publisher: AMQPConnection,
        policy: RetryPolicy = RetryPolicy(), publisherUsers: PublisherUsers = .serviceNames,
        faults: FaultInjection = .none, batchLimit: Int = 16, logger: Logger
    ) throws {
        precondition(batchLimit >= 1, "a batch holds at least one delivery")
        self.batchLimit = batchLimit
        self.service = service
        outbox = try Outbox(schema: schema)
        inboxTable = try PostgresIdentifier.quoted(schema) + ".inbox"
        self.handlers = handlers
        self.pool = pool
        self.publisher = publisher
        self.policy = policy
        self.publisherUsers = publisherUsers
        self.faults = faults
        var logger = logger
        logger[metadataKey: "component"] = "consumer"
        self.logger = logger
    }

    /// Handles deliveries until the consumer ends or the task is cancelled: those that have
    /// arrived together as a batch (`handle(batch:)`), a lone one by itself. Cancelled, it
    /// finishes the batch in hand; deliveries not yet handled go back to the broker when the
    /// connection closes.
    public func run(_ consumer: AMQPConsumer) async throws {
        let batches = DeliveryBatches(limit: batchLimit)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await batches.fill(from: consumer) }
            while let batch = try await batches.next() {
                _ = await handle(batch: batch)
                if Task.isCancelled { break }
            }
            group.cancelAll()
        }
    }

    /// Handles one delivery completely: effect, then ack (or retry, dead letter, requeue).
    ///
    /// In a span that continues the trace the message carries, so what the handler emits (its
    /// outbox rows take the current trace context) belongs to the same trace: one order, one trace.
    public func handle(_ delivery: AMQPDelivery) async -> Outcome {
        let span = startProcessingSpan(delivery)
        let outcome = await ServiceContext.$current.withValue(span.context) { await handleInSpan(delivery) }
        end(span, outcome)
        return outcome
    }

    /// A consumer span for `delivery`, continuing the trace its headers carry.
    func startProcessingSpan(_ delivery: AMQPDelivery) -> any Span {
        let span = startSpan(
            "\(delivery.properties.type ?? "message") process", context: TraceHeaders.extract(from: delivery.properties.headers),
            ofKind: .consumer)
        span.attributes["messaging.system"] = "rabbitmq"
        span.attributes["messaging.destination.name"] = delivery.exchange
        span.attributes["messaging.rabbitmq.destination.routing_key"] = delivery.routingKey
        span.attributes["messaging.message.id"] = delivery.properties.messageId ?? ""
        span.attributes["messaging.message.conversation_id"] = delivery.properties.correlationId ?? ""
        return span
    }

    func end(_ span: any Span, _ outcome: Outcome) {
        span.attributes["bazaar.outcome"] = outcome.metricLabel
        switch outcome {
        case .deadLettered(let reason), .requeued(let reason): span.setStatus(SpanStatus(code: .error, message: reason))
        case .retryScheduled: span.setStatus(SpanStatus(code: .error, message: "handler failed; retry scheduled"))
        case .applied, .duplicate: break
        }
        span.end()
    }

    private func handleInSpan(_ delivery: AMQPDelivery) async -> Outcome {
        let started = ContinuousClock.now
        var header: EnvelopeHeader?
        var state: RetryState?
        let outcome: Outcome
        do {
            guard delivery.body.count <= policy.maximumMessageBytes else {
                throw PoisonMessage.oversized("\(delivery.body.count) bytes; at most \(policy.maximumMessageBytes) are accepted")
            }
            let body = Data(delivery.body)
            header = try decodeHeader(body)
            state = try retryState(of: delivery)
            try checkProvenance(header!, origin: state!.origin)
            outcome = try await applyWhenTheDatabaseAnswers(body, header: header!) ? .applied : .duplicate
            faults.maybeCrash(at: .consumerBeforeAck)
            // The effect is committed. If the ack can't be sent (the channel closed meanwhile),
            // the broker delivers the message again and the inbox makes that a no-op.
            do {
                try await delivery.ack()
            } catch {
                logger.notice("committed, but the ack was lost (\(error)); the redelivery will be skipped")
            }
        } catch let poison as PoisonMessage {
            outcome = await park(delivery, state: state, reason: poison.kind, error: poison.detail)
        } catch is CancellationError {
            // Shutting down while waiting for the database: the broker redelivers it.
            outcome = .requeued(reason: "shutting down before the database answered")
        } catch {
            // Only the handler throws other errors, and it runs once the state was read.
            outcome = await retryLater(delivery, state: state!, error: error)
        }
        record(outcome, header: header, delivery: delivery, duration: ContinuousClock.now - started)
        return outcome
    }

    /// The delivery's log line and metrics.
    func record(_ outcome: Outcome, header: EnvelopeHeader?, delivery: AMQPDelivery, duration: Duration) {
        // Only known event types become labels: a label per type a stranger made up would let
        // anyone who can publish grow the metrics without bound.
        let eventType = header.map { EventCatalogue.event(type: $0.type, version: $0.version) == nil ? "unknown" : $0.type } ?? "unknown"
        EventMetrics.consumed(eventType, outcome: outcome)
        EventMetrics.handled(eventType, in: duration)
        log(outcome, header: header, delivery: delivery, duration: duration)
    }

    func decodeHeader(_ body: Data) throws -> EnvelopeHeader {
        do {
            return try EventJSON.decode(EnvelopeHeader.self, from: body)
        } catch {
            throw PoisonMessage.undecodable("not an event envelope: \(error)")
        }
    }

    func retryState(of delivery: AMQPDelivery) throws(PoisonMessage) -> RetryState {
        try RetryState(delivery, service: service, ownUser: publisher.user)
    }

    /// Trusts what the broker vouches for, not what the payload claims: each service publishes
    /// only to its own exchange, as its own broker user (the `user-id` the broker checked), so an
    /// envelope whose `source` (or event type) doesn't match the exchange it arrived on or the
    /// user who published it is forged or misrouted, and is parked.
    func checkProvenance(_ header: EnvelopeHeader, origin: RetryState.Origin) throws {
        let expectedUser = publisherUsers.user(of: header.source)
        guard origin.userId == expectedUser else {
            throw PoisonMessage.untrustedSource(
                "\(header.type) claims to come from \(header.source) but was published by \(origin.userId.map { "user \($0)" } ?? "an unnamed user"), not \(expectedUser)")
        }
        guard header.source.exchange == origin.exchange else {
            throw PoisonMessage.untrustedSource(
                "\(header.type) claims to come from \(header.source) but arrived on the \(origin.exchange) exchange")
        }
        if let event = EventCatalogue.event(type: header.type, version: header.version), event.producer != header.source {
            throw PoisonMessage.untrustedSource("\(header.type) is published by \(event.producer), not \(header.source)")
        }
    }

    /// Applies the event, trying again in place for as long as the database is unreachable or
    /// the transaction loses a race. Returns false for a duplicate.
    private func applyWhenTheDatabaseAnswers(_ body: Data, header: EnvelopeHeader) async throws -> Bool {
        var pause = policy.databasePauseInitial
        while true {
            do {
                return try await apply(body, header: header)
            } catch let error as PostgresError where error.isTransient {
                logger.warning(
                    "database unavailable, trying again in \(pause): \(error)",
                    metadata: ["eventId": "\(header.eventId.uuidString.lowercased())"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, policy.databasePauseMaximum)
            }
        }
    }

    /// The inbox insert, the handler, the commit. Returns false for a duplicate.
    private func apply(_ body: Data, header: EnvelopeHeader) async throws -> Bool {
        guard let handler = handlers.handler(type: header.type, version: header.version) else {
            throw PoisonMessage.unknownEvent("\(service) does not handle \(header.type) v\(header.version)")
        }
        let (inboxTable, outbox, service, faults) = (inboxTable, outbox, service, faults)
        let commitActions = CommitActions()
        let applied = try await pool.transaction { transaction in
            let applied = try Self.apply(
                body, header: header, handler: handler, inboxTable: inboxTable,
                context: HandlerContext(
                    transaction: transaction, incoming: header, outbox: outbox, service: service, commitActions: commitActions))
            faults.maybeCrash(at: .consumerBeforeCommit)
            return applied
        }
        if applied { commitActions.run() }
        return applied
    }

    /// Within the caller's transaction: records the event in the inbox and, unless it was there
    /// already, runs its handler. Returns false for a duplicate. The insert is the lock: a second
    /// consumer inserting the same event id waits for the first one's transaction, then does nothing.
    static func apply(
        _ body: Data, header: EnvelopeHeader, handler: EventHandlers.ErasedHandler, inboxTable: String,
        context: HandlerContext
    ) throws -> Bool {
        let insert = inboxInsert(header, into: inboxTable)
        guard try context.transaction.execute(insert.sql, parameters: insert.parameters) == 1 else { return false }
        try handler(body, context)
        return true
    }

    /// The statement that records an event in the inbox; it changes no row for a duplicate.
    static func inboxInsert(_ header: EnvelopeHeader, into inboxTable: String) -> PostgresStatement {
        PostgresStatement(
            """
            INSERT INTO \(inboxTable)
                (event_id, event_type, event_version, source, correlation_id, causation_id, occurred_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (event_id) DO NOTHING
            """,
            header.eventId, header.type, header.version, header.source.rawValue, header.correlationId,
            header.causationId, header.occurredAt)
    }

    /// Sends a delivery whose handler failed to the retry queue of its attempt, or parks it once
    /// it has had all its attempts.
    private func retryLater(_ delivery: AMQPDelivery, state: RetryState, error: any Error) async -> Outcome {
        let attempt = state.attempts + 1
        guard attempt < policy.maximumAttempts else {
            return await park(delivery, state: state, reason: "retries_exhausted", error: "\(error)", failedAttempts: attempt)
        }
        let delay = policy.delay(afterFailure: attempt)
        let copy = OutgoingMessage(
            exchange: service.retryExchange, routingKey: ServiceTopology.retryQueue(of: service, delay: delay),
            body: delivery.body, properties: state.properties(afterFailure: attempt, error: "\(error)", ownUser: publisher.user))
        return await forward(delivery, as: copy, outcome: .retryScheduled(attempt: attempt, delay: delay))
    }

    /// Parks a delivery in the service's dead-letter queue, saying why in its headers. `state` is
    /// nil when the delivery was refused before its retry headers could be trusted.
    private func park(
        _ delivery: AMQPDelivery, state: RetryState?, reason: String, error: String, failedAttempts: Int? = nil
    ) async -> Outcome {
        var properties = state?.properties(afterFailure: failedAttempts, error: error, ownUser: publisher.user) ?? delivery.properties
        // Published by this service: the broker accepts no other `user-id` from its connection.
        properties.userId = publisher.user
        if state == nil, let userId = delivery.properties.userId { properties.headers["x-bazaar-original-user-id"] = .string(userId) }
        properties.headers["x-bazaar-reason"] = .string(reason)
        properties.headers["x-bazaar-error"] = .string(String(error.prefix(1000)))
        properties.headers["x-bazaar-service"] = .string(service.rawValue)
        properties.headers["x-bazaar-original-exchange"] = .string(state?.origin.exchange ?? delivery.exchange)
        properties.headers["x-bazaar-original-routing-key"] = .string(state?.origin.routingKey ?? delivery.routingKey)
        properties.headers["x-bazaar-dead-lettered-at"] = .timestamp(Date())
        let copy = OutgoingMessage(
            exchange: service.deadLetterExchange, routingKey: service.deadLetterQueue, body: delivery.body,
            properties: properties)
        return await forward(delivery, as: copy, outcome: .deadLettered(reason: "\(reason): \(error)"))
    }

    /// Publishes `copy` and acks the delivery once the broker confirmed the copy. If the copy
    /// can't be published, the delivery goes back to the queue after a pause instead: never
    /// acked without its copy, never lost.
    private func forward(_ delivery: AMQPDelivery, as copy: OutgoingMessage, outcome: Outcome) async -> Outcome {
        do {
            try await publisher.publish(copy)
        } catch {
            try? await Task.sleep(for: policy.databasePauseInitial)
            try? await delivery.nack(requeue: true)
            return .requeued(reason: "could not publish to \(copy.exchange): \(error)")
        }
        do {
            try await delivery.ack()
        } catch {
            // The copy is out, the original comes back: its second copy is a duplicate the inbox absorbs.
            logger.notice("forwarded to \(copy.exchange), but the ack was lost (\(error))")
        }
        return outcome
    }

    private func log(_ outcome: Outcome, header: EnvelopeHeader?, delivery: AMQPDelivery, duration: Duration) {
        var metadata: Logger.Metadata = [
            "eventType": "\(header?.type ?? delivery.properties.type ?? "?")",
            "eventId": "\(header?.eventId.uuidString.lowercased() ?? delivery.properties.messageId ?? "?")",
            "duration": "\(duration)",
            "outcome": "\(outcome.metricLabel)",
        ]
        if let header {
            metadata["orderId"] = "\(header.correlationId.uuidString.lowercased())"
            metadata["causationId"] = "\(header.causationId?.uuidString.lowercased() ?? "-")"
        }
        switch outcome {
        case .applied: logger.info("handled", metadata: metadata)
        case .duplicate: logger.info("duplicate, skipped", metadata: metadata)
        case .deadLettered(let reason): logger.error("dead-lettered: \(reason)", metadata: metadata)
        case .retryScheduled(let attempt, let delay):
            logger.warning("failed (attempt \(attempt)), retrying in \(delay)", metadata: metadata)
        case .requeued(let reason): logger.warning("requeued: \(reason)", metadata: metadata)
        }
    }
}
