import Contracts
import Foundation
import Postgres

/// Writes events into a service's outbox table, inside the transaction of the change that
/// caused them: the event exists if and only if the change committed.
///
/// The relay (`OutboxRelay`) publishes them later; a `NOTIFY` sent in the same transaction wakes
/// it as soon as the transaction commits (Postgres delivers notifications only on commit).
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
    /// routing key. `headers` travel as AMQP headers (trace context, for example).
    public func append<Event: DomainEvent>(
        _ envelope: EventEnvelope<Event>, headers: [String: String] = [:], in transaction: PostgresTransaction
    ) throws {
        let payload = String(decoding: try EventJSON.encode(envelope), as: UTF8.self)
        let headerJSON = String(decoding: try JSONEncoder().encode(headers), as: UTF8.self)
        try transaction.execute(
            """
            INSERT INTO \(table)
                (event_id, event_type, event_version, exchange, routing_key, correlation_id, causation_id, payload, headers)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9::jsonb)
            """,
            envelope.eventId, Event.type, Event.version, Event.producer.exchange, Event.routingKey,
            envelope.correlationId, envelope.causationId, payload, headerJSON)
        try transaction.notify(channel: channel)
    }
}
