import Contracts
import Foundation
import Postgres

/// What a handler may do while it handles one event: change the service's tables and emit
/// events, all in the transaction that also records the event in the inbox.
public struct HandlerContext {
    /// The open transaction. Everything written through it commits with the inbox row, or not at all.
    public let transaction: PostgresTransaction
    /// The envelope fields of the event being handled.
    public let incoming: EnvelopeHeader
    let outbox: Outbox
    let service: ServiceName
    let commitActions: CommitActions

    /// Emits an event caused by the one being handled: same correlation id (the saga's order),
    /// the handled event as its cause. It is published after the transaction commits.
    public func emit<Event: DomainEvent>(_ event: Event, headers: [String: String] = [:]) throws {
        let envelope = EventEnvelope(
            correlationId: incoming.correlationId, causationId: incoming.eventId, source: service, data: event)
        try outbox.append(envelope, headers: headers, in: transaction)
    }

    /// Runs `action` once the transaction has committed, and only if it does: for effects outside
    /// the database, like metrics, that must not outlive a rollback.
    public func afterCommit(_ action: @escaping @Sendable () -> Void) {
        commitActions.append(action)
    }
}

/// The service's reactions to the events it consumes: one synchronous handler per event version.
///
/// Handlers are synchronous because they run inside a database transaction (see
/// `PostgresTransaction`); they must not wait on anything but the database.
public struct EventHandlers: Sendable {
    typealias ErasedHandler = @Sendable (Data, HandlerContext) throws -> Void

    private(set) var handlers: [EventKey: ErasedHandler] = [:]

    public init() {}

    /// Registers `handler` for `Event`. A second registration for the same event replaces the first.
    public mutating func on<Event: DomainEvent>(
        _ event: Event.Type, _ handler: @escaping @Sendable (EventEnvelope<Event>, HandlerContext) throws -> Void
    ) {
        handlers[EventKey(event)] = { body, context in
            let envelope: EventEnvelope<Event>
            do {
                envelope = try EventJSON.decode(EventEnvelope<Event>.self, from: body)
            } catch {
                throw PoisonMessage.invalidData("\(Event.type) v\(Event.version): \(error)")
            }
            try handler(envelope, context)
        }
    }

    /// The events handled: what the service's queue must be bound to.
    public var events: [EventKey] { Array(handlers.keys) }

    func handler(type: String, version: Int) -> ErasedHandler? {
        handlers[EventKey(type: type, version: version)]
    }
}

/// An event type and major version.
public struct EventKey: Hashable, Sendable, CustomStringConvertible {
    public var type: String
    public var version: Int

    public init(type: String, version: Int) {
        self.type = type
        self.version = version
    }

    public init(_ event: any DomainEvent.Type) {
        self.init(type: event.type, version: event.version)
    }

    public var description: String { "\(type) v\(version)" }
}

/// A message that can never be processed, however often it is retried: it goes straight to the
/// dead-letter queue with this reason in its headers.
public enum PoisonMessage: Error, Equatable, CustomStringConvertible {
    /// Larger than any event: parked unread.
    case oversized(String)
    /// Not an event envelope at all (not JSON, or missing envelope fields).
    case undecodable(String)
    /// A well-formed envelope of a type or version this service does not handle.
    case unknownEvent(String)
    /// The envelope is fine but its data does not decode into the event type.
    case invalidData(String)
    /// A handler found the event impossible to apply (a contract violation, not a transient fault).
    case rejected(String)
    /// The envelope's claimed source doesn't match the exchange it came through.
    case untrustedSource(String)

    /// A short machine-readable kind, for the `x-bazaar-reason` header.
    public var kind: String {
        switch self {
        case .oversized: "oversized"
        case .undecodable: "undecodable"
        case .unknownEvent: "unknown_event"
        case .invalidData: "invalid_data"
        case .rejected: "rejected_by_handler"
        case .untrustedSource: "untrusted_source"
        }
    }

    /// What exactly was wrong, for the `x-bazaar-error` header.
    public var detail: String {
        switch self {
        case .oversized(let detail), .undecodable(let detail), .unknownEvent(let detail), .invalidData(let detail), .rejected(let detail),
            .untrustedSource(let detail):
            detail
        }
    }

    public var description: String { "\(kind): \(detail)" }
}
