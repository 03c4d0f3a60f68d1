import Contracts
import Foundation
import Postgres

/// Writes events into a service's outbox table, inside the transaction of the change that
/// caused them: the event exists if and only if the change committed.
///
/// The relay (`OutboxRelay`) publishes them as soon as the transaction commits: handed the events
/// directly when it leads in this process, otherwise woken by a `NOTIFY` sent in the same
/// transaction (Postgres delivers notifications only on commit, and several identical ones of a
/// transaction as one).
public struct Outbox: Sendable {
    /// The service's schema, which holds its `outbox` table.
    public let schema: String
    let table: String
    /// The same schema's inbox, which the relay also trims.
    let inboxTable: String

    public init(schema: String) throws {
        self.schema = schema
        table = try PostgresIdentifier.quoted(schema) + ".outbox"
        inboxTable = try PostgresIdentifier.quoted(schema) + ".inbox"
        channel = "bazaar_outbox_\(schema)"
        // The channel is an identifier too (LISTEN quotes it): it must fit in 63 bytes.
        _ = try PostgresIdentifier.quoted(channel)
    }

    /// The LISTEN/NOTIFY channel the relay waits on.
    public let channel: String

    /// Adds `envelope` to the outbox, to be published on its producer's exchange with its
    /// routing key. `headers` travel as AMQP headers; the current trace context (`traceparent`,
    /// `tracestate`) is added to them, so the event's consumers continue the trace that caused it.
    public func append<Event: DomainEvent>(
        _ envelope: EventEnvelope<Event>, headers: [String: String] = [:], in transaction: PostgresTransaction
    ) throws {
        var headers = headers
        TraceHeaders.inject(into: &headers)
        let payload = String(decoding: try EventJSON.encode(envelope), as: UTF8.self)
        let headerJSON = String(decoding: try JSONEncoder().encode(headers), as: UTF8.self)
        let values: [any PostgresBindable] = [
            envelope.eventId, Event.type, Event.version, Event.producer.exchange, Event.routingKey,
            envelope.correlationId, envelope.causationId, payload, headerJSON,
        ]
        let insert = """
            INSERT INTO \(table)
                (event_id, event_type, event_version, exchange, routing_key, correlation_id, causation_id, payload, headers)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9::jsonb)
            """
        // Queued: the row travels with the transaction's next statement or its COMMIT. The relay
        // must hear of it once it is committed. When this process's own relay leads, the event is
        // handed to it after the commit, and it publishes without reading the row back;
        // otherwise a NOTIFY, which Postgres delivers on commit, wakes the leader wherever it
        // runs. (A NOTIFY costs the database a signal and a wake-up of the listening session, and
        // the service a wake-up of its listener: a price only the other case pays.)
        if let handOver = LeadingRelays.handOver(to: schema) {
            transaction.enqueue(insert, parameters: values)
            let event = PendingEvent(
                eventId: envelope.eventId, type: Event.type, version: Event.version, exchange: Event.producer.exchange,
                routingKey: Event.routingKey, correlationId: envelope.correlationId, causationId: envelope.causationId,
                payload: payload, headers: headers, createdAt: Date(), attempts: 0)
            transaction.afterCommit { handOver(event) }
        } else {
            // The insert and the NOTIFY in one statement.
            transaction.enqueue(
                "WITH inserted AS (\(insert) RETURNING position) SELECT pg_notify($10, '') FROM inserted",
                parameters: values + [channel])
        }
    }
}

/// What an operator watches in a service's outbox and inbox: events waiting to be published,
/// how long the oldest has waited, and how many events the inbox remembers.
public struct OutboxStatistics: Sendable {
    /// Outbox rows not yet published (a broker outage, or a relay falling behind).
    public var pending: Int
    /// Seconds since the oldest of them was written; 0 when none waits.
    public var oldestPendingAge: Double
    /// Rows in the inbox (events handled within the retention).
    public var inboxRows: Int
}

extension Outbox {
    /// Reads the statistics: cheap enough for every scrape, whatever the history, since the
    /// pending rows have an index of their own and the inbox is estimated once it is large.
    public func statistics(on pool: PostgresPool) async throws -> OutboxStatistics {
        let rows = try await pool.query(
            """
            SELECT (SELECT count(*) FROM \(table) WHERE published_at IS NULL) AS pending,
                   (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
                      FROM \(table) WHERE published_at IS NULL) AS oldest_age,
                   (SELECT CASE WHEN c.reltuples < 100000 THEN (SELECT count(*) FROM \(inboxTable))
                                ELSE c.reltuples::bigint END
                      FROM pg_class c WHERE c.oid = $1::regclass) AS inbox_rows
            """, inboxTable)
        guard let row = rows.first else { return OutboxStatistics(pending: 0, oldestPendingAge: 0, inboxRows: 0) }
        return OutboxStatistics(
            pending: try row.decode(Int.self, column: "pending"),
            oldestPendingAge: try row.decode(Double.self, column: "oldest_age"),
            inboxRows: try row.decode(Int.self, column: "inbox_rows"))
    }
}
