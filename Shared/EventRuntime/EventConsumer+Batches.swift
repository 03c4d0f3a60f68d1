import AMQP
import Contracts
import Foundation
import Postgres
import ServiceContextModule
import Tracing

extension EventConsumer {
    /// Handles deliveries that arrived together: those that pass every check a message can fail
    /// on its own are applied in **one transaction** — one commit, one flush to disk for all — and
    /// acked after it. Nothing is acked before the commit, and each still goes through the inbox,
    /// so the guarantees are those of `handle(_:)`.
    ///
    /// If the shared transaction fails (a handler's error, a lock it would wait for too long, the
    /// database away), it
    /// rolls back as a whole and each of its deliveries is handled alone, where a failure is
    /// retried, parked or waited out for that delivery only. Deliveries that fail a check (too big,
    /// not an envelope, unknown, forged) are handled alone from the start.
    ///
    /// Returns the outcomes in no particular order.
    public func handle(batch deliveries: [AMQPDelivery]) async -> [Outcome] {
        var together: [Vetted] = []
        var alone: [AMQPDelivery] = []
        for delivery in deliveries {
            if deliveries.count > 1, let vetted = vet(delivery) { together.append(vetted) } else { alone.append(delivery) }
        }
        var outcomes: [Outcome] = []
        if together.count > 1 {
            if let applied = await applyTogether(together) {
                outcomes = applied
            } else {
                alone += together.map(\.delivery)
            }
        } else {
            alone += together.map(\.delivery)
        }
        for delivery in alone { outcomes.append(await handle(delivery)) }
        return outcomes
    }

    /// How long a batch's transaction waits for a lock before it gives way: longer than a batch
    /// takes to commit, so it can wait for a neighbour's commit, far shorter than a deadlock takes to
    /// be found.
    static let batchLockTimeoutMilliseconds = 50

    /// A delivery ready for its handler.
    struct Vetted: Sendable {
        var delivery: AMQPDelivery
        var body: Data
        var header: EnvelopeHeader
        var handler: EventHandlers.ErasedHandler
    }

    /// The delivery, if it passes the checks that don't need the database; nil if it fails one
    /// (`handle(_:)` then parks it, saying why).
    private func vet(_ delivery: AMQPDelivery) -> Vetted? {
        guard delivery.body.count <= policy.maximumMessageBytes else { return nil }
        let body = Data(delivery.body)
        guard let header = try? decodeHeader(body), let state = try? retryState(of: delivery),
            (try? checkProvenance(header, origin: state.origin)) != nil,
            let handler = handlers.handler(type: header.type, version: header.version)
        else { return nil }
        return Vetted(delivery: delivery, body: body, header: header, handler: handler)
    }

    /// Applies `batch` in one transaction and acks it; nil if the transaction failed (nothing of
    /// it was applied, nothing acked).
    private func applyTogether(_ batch: [Vetted]) async -> [Outcome]? {
        let started = ContinuousClock.now
        let spans = batch.map { startProcessingSpan($0.delivery) }
        let contexts = spans.map(\.context)
        let (inboxTable, outbox, service, faults) = (inboxTable, outbox, service, faults)
        let commitActions = CommitActions()
        let inserted: [Bool]
        do {
            inserted = try await pool.transaction { transaction in
                // A batch never waits long for a lock: it gives way, and its deliveries are handled
                // alone. Two batches that lock the same rows in different orders (accounts of the
                // same customers, say) would otherwise deadlock, and Postgres only notices after
                // `deadlock_timeout` (1 s), for every such pair.
                transaction.enqueue("SET LOCAL lock_timeout = '\(Self.batchLockTimeoutMilliseconds)ms'")
                // Every delivery's inbox row in one round trip: which of them are new. The
                // inserts are the locks, as in `apply`; handlers then run for the new ones only.
                let inserted = try transaction.execute(each: batch.map { Self.inboxInsert($0.header, into: inboxTable) })
                    .map { $0 == 1 }
                for ((item, context), isNew) in zip(zip(batch, contexts), inserted) where isNew {
                    // Each in its own span, so the events it emits continue its own trace.
                    try ServiceContext.$current.withValue(context) {
                        try item.handler(
                            item.body,
                            HandlerContext(
                                transaction: transaction, incoming: item.header, outbox: outbox, service: service,
                                commitActions: commitActions))
                    }
                }
                faults.maybeCrash(at: .consumerBeforeCommit)
                return inserted
            }
        } catch {
            logger.debug("\(batch.count) deliveries could not be applied together (\(error)); applying each alone")
            spans.forEach { $0.end() }
            return nil
        }
        commitActions.run()
        faults.maybeCrash(at: .consumerBeforeAck)
        let ackErrors = await AMQPDelivery.ack(batch.map(\.delivery))
        return batch.indices.map { index in
            if let error = ackErrors[index] {
                logger.notice("committed, but the ack was lost (\(error)); the redelivery will be skipped")
            }
            let outcome: Outcome = inserted[index] ? .applied : .duplicate
            end(spans[index], outcome)
            record(outcome, header: batch[index].header, delivery: batch[index].delivery, duration: ContinuousClock.now - started)
            return outcome
        }
    }
}
