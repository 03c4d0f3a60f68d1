import AMQP
import Contracts
import Foundation
import Postgres

/// Publishing a service's already-published events again, to one queue only: how a consumer that
/// binds its queue late gets the events it missed (`bazaar replay events`).
///
/// The outbox keeps published rows for `OUTBOX_RETENTION_HOURS`; that is how far back a replay
/// reaches. A replayed message is the relay's message for the row (same body, message id = event
/// id, same properties and `user-id`), sent through the default exchange with the queue's name as
/// routing key: it reaches that queue and nothing else, so the exchange's other consumers see
/// nothing twice. It carries `x-replayed: true` and where it was first published, which the
/// consumer checks as it would the exchange (`RetryState`). The consumer's inbox drops any event
/// it has already applied, so a replay is safe to run twice.
///
/// Order: rows are replayed by outbox `position`, the order they were written in (and, for one
/// order, committed in: see docs/outbox-and-inbox.md), so a queue that receives a replay gets each
/// order's events in their original order.
public enum OutboxReplay {
    /// `true` on every replayed message.
    public static let replayedHeader = "x-replayed"
    /// The exchange a replayed event was first published to.
    public static let exchangeHeader = "x-replayed-exchange"
    /// The routing key it was first published with.
    public static let routingKeyHeader = "x-replayed-routing-key"

    /// A published outbox row, ready to be sent again.
    public struct Row: Sendable {
        public let position: Int64
        public let eventId: UUID
        public let type: String
        public let correlationId: UUID
        public let createdAt: Date
        let pending: PendingEvent
    }

    /// The rows of `schema`'s outbox published and written at or after `since`, of `types` (all
    /// when empty), in outbox order.
    public static func publishedRows(
        schema: String, since: Date, types: [String], on connection: PostgresConnection
    ) async throws -> [Row] {
        let table = try PostgresIdentifier.quoted(schema) + ".outbox"
        let typeList = "{" + types.map { "\"\($0)\"" }.joined(separator: ",") + "}"
        return try await connection.query(
            """
            SELECT position, event_id, event_type, event_version, exchange, routing_key, correlation_id, causation_id,
                payload::text AS payload, headers::text AS headers, created_at, attempts
            FROM \(table)
            WHERE published_at IS NOT NULL AND created_at >= $1 AND (cardinality($2::text[]) = 0 OR event_type = ANY($2::text[]))
            ORDER BY position
            """, since, typeList
        ).map { row in
            let pending = try PendingEvent(row)
            return Row(
                position: try row.decode(Int64.self, column: "position"), eventId: pending.eventId, type: pending.type,
                correlationId: pending.correlationId, createdAt: pending.createdAt, pending: pending)
        }
    }

    /// When the oldest row the outbox still keeps was written: a replay can't reach further back.
    public static func oldestKept(schema: String, on connection: PostgresConnection) async throws -> Date? {
        let table = try PostgresIdentifier.quoted(schema) + ".outbox"
        return try await connection.query("SELECT min(created_at) AS oldest FROM \(table)").first?.decode(Date?.self, column: "oldest")
    }

    /// The message that replays `row` to `queue`, published as `user` (the producer's broker user:
    /// what consumers check; only the producer or an admin with the impersonator tag may set it).
    public static func message(_ row: Row, from service: ServiceName, as user: String, toQueue queue: String) -> OutgoingMessage {
        var message = row.pending.message(from: service, as: user)
        message.properties.headers[replayedHeader] = .bool(true)
        message.properties.headers[exchangeHeader] = .string(message.exchange)
        message.properties.headers[routingKeyHeader] = .string(message.routingKey)
        message.exchange = ""
        message.routingKey = queue
        // A queue that vanished must be an error, not a silent drop.
        message.mandatory = true
        return message
    }
}
