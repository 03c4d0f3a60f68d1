import Contracts
import Foundation
import Logging
import Postgres

/// One order's saga as the services recorded it: every event any of them emitted (outbox) or
/// applied (inbox) for the order, with when and what caused it. Built from the databases, not
/// from logs, so it is complete for as long as the outboxes keep their published rows.
struct SagaTimeline: Codable, Sendable {
    struct Delivery: Codable, Sendable, Equatable {
        var service: String
        var receivedAt: Date
    }

    struct Event: Codable, Sendable, Equatable {
        var eventId: UUID
        var type: String
        var source: String
        var causationId: UUID?
        var emittedAt: Date
        var publishedAt: Date?
        var deliveredTo: [Delivery]
    }

    var orderId: UUID
    var events: [Event]

    /// The event that caused `event`, if it is part of this timeline.
    func cause(of event: Event) -> Event? {
        event.causationId.flatMap { id in events.first { $0.eventId == id } }
    }

    /// Reads the timeline of `orderId` from each service's outbox and inbox.
    static func load(orderId: UUID, environment: BazaarEnvironment) async throws -> SagaTimeline {
        let configuration = try PostgresConfiguration(url: environment.databaseURL, applicationName: "bazaar-cli")
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: configuration, logger: cliLogger)
        } catch {
            throw CLIError("database not reachable at \(configuration) — is the stack running? try `bazaar stack up`")
        }
        defer { Task { await connection.close() } }
        var events: [UUID: Event] = [:]
        var deliveries: [UUID: [Delivery]] = [:]
        for service in ServiceName.allCases {
            let schema = try PostgresIdentifier.quoted(environment.schema(of: service))
            for row in try await connection.query(
                "SELECT event_id, event_type, causation_id, created_at, published_at FROM \(schema).outbox WHERE correlation_id = $1",
                orderId)
            {
                let id = try row.decode(UUID.self, column: "event_id")
                events[id] = Event(
                    eventId: id, type: try row.decode(String.self, column: "event_type"), source: service.rawValue,
                    causationId: try row.decode(UUID?.self, column: "causation_id"),
                    emittedAt: try row.decode(Date.self, column: "created_at"),
                    publishedAt: try row.decode(Date?.self, column: "published_at"), deliveredTo: [])
            }
            for row in try await connection.query(
                "SELECT event_id, received_at FROM \(schema).inbox WHERE correlation_id = $1", orderId)
            {
                deliveries[try row.decode(UUID.self, column: "event_id"), default: []].append(
                    Delivery(service: service.rawValue, receivedAt: try row.decode(Date.self, column: "received_at")))
            }
        }
        for (id, received) in deliveries { events[id]?.deliveredTo = received.sorted { $0.receivedAt < $1.receivedAt } }
        return SagaTimeline(orderId: orderId, events: events.values.sorted { ($0.emittedAt, $0.type) < ($1.emittedAt, $1.type) })
    }

    /// The timeline as a table a person can read:
    ///
    ///     at        step     service       event            caused by       delivered to
    ///     +0 ms     —        order         OrderPlaced      request         inventory +3 ms
    ///     +14 ms    +14 ms   inventory     StockReserved    OrderPlaced     payment +2 ms
    func rendered() -> String {
        guard let start = events.first?.emittedAt else { return "  (no events recorded for this order)" }
        var lines = [
            "  " + [pad("at", 9), pad("step", 9), pad("service", 13), pad("event", 17), pad("caused by", 16), "delivered to"]
                .joined()
        ]
        for event in events {
            let cause = cause(of: event)
            let step = cause.map { milliseconds(event.emittedAt.timeIntervalSince($0.emittedAt)) } ?? "—"
            let delivered = event.deliveredTo.map { "\($0.service) \(milliseconds($0.receivedAt.timeIntervalSince(event.emittedAt)))" }
            lines.append(
                "  " + [
                    pad(milliseconds(event.emittedAt.timeIntervalSince(start)), 9), pad(step, 9), pad(event.source, 13),
                    pad(event.type, 17), pad(cause?.type ?? (event.causationId == nil ? "request" : "?"), 16),
                    delivered.isEmpty ? (event.publishedAt == nil ? "(not yet published)" : "—") : delivered.joined(separator: ", "),
                ].joined())
        }
        return lines.joined(separator: "\n")
    }

    private func milliseconds(_ seconds: TimeInterval) -> String { "+\(Int((seconds * 1000).rounded())) ms" }
    private func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
}
