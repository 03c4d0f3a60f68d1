import Foundation

/// An event one service tells the others about. Each conforming type is one version of one
/// event; a breaking change is a new type with a higher `version`, published beside the old one
/// until no consumer needs it.
public protocol DomainEvent: Codable, Sendable, Equatable {
    /// The event's name, as in the envelope's `type` (`OrderPlaced`).
    static var type: String { get }
    /// Its major version, as in the envelope's `version` and the routing key's suffix.
    static var version: Int { get }
    /// The only service that publishes it.
    static var producer: ServiceName { get }
    /// `<aggregate>.<what happened>` (`order.placed`); the routing key adds `.v<version>`.
    static var subject: String { get }
}

extension DomainEvent {
    /// The routing key on the producer's exchange: `order.placed.v1`. Consumers bind patterns on
    /// it (`order.*.v1`, `#.v1`).
    public static var routingKey: String { "\(subject).v\(version)" }
}

/// The envelope every event travels in: the same fields for every event, so consumers can route,
/// deduplicate and trace before they look at `data`.
///
/// ```json
/// {"eventId": "…", "type": "OrderPlaced", "version": 1, "occurredAt": "2026-11-23T20:36:01.123Z",
///  "correlationId": "<order id>", "causationId": "<event that caused it>", "source": "order", "data": {…}}
/// ```
public struct EventEnvelope<Event: DomainEvent>: Sendable, Equatable {
    /// Unique per event, and the AMQP message id: the inbox deduplicates on it. Time-ordered
    /// (`UUID.timeOrdered`), so the outbox's and the inboxes' indexes on it grow at one end.
    public var eventId: UUID
    public var occurredAt: Date
    /// The order id for the events of a saga: every event of one order carries it. Events outside
    /// a saga (ProductUpdated) carry the id of the change that caused them.
    public var correlationId: UUID
    /// The event that caused this one; `nil` for a saga's first event (caused by an HTTP request).
    public var causationId: UUID?
    public var source: ServiceName
    public var data: Event

    public init(
        eventId: UUID = .timeOrdered(), occurredAt: Date = Date(), correlationId: UUID, causationId: UUID?,
        source: ServiceName = Event.producer, data: Event
    ) {
        self.eventId = eventId
        self.occurredAt = occurredAt
        self.correlationId = correlationId
        self.causationId = causationId
        self.source = source
        self.data = data
    }

    public var type: String { Event.type }
    public var version: Int { Event.version }
}

extension EventEnvelope: Codable {
    private enum CodingKeys: String, CodingKey {
        case eventId, type, version, occurredAt, correlationId, causationId, source, data
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        let version = try container.decode(Int.self, forKey: .version)
        guard type == Event.type, version == Event.version else {
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container,
                debugDescription: "expected \(Event.type) v\(Event.version), found \(type) v\(version)")
        }
        eventId = try container.decode(UUID.self, forKey: .eventId)
        occurredAt = try container.decode(Date.self, forKey: .occurredAt)
        correlationId = try container.decode(UUID.self, forKey: .correlationId)
        causationId = try container.decodeIfPresent(UUID.self, forKey: .causationId)
        source = try container.decode(ServiceName.self, forKey: .source)
        data = try container.decode(Event.self, forKey: .data)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(eventId, forKey: .eventId)
        try container.encode(Event.type, forKey: .type)
        try container.encode(Event.version, forKey: .version)
        try container.encode(occurredAt, forKey: .occurredAt)
        try container.encode(correlationId, forKey: .correlationId)
        try container.encodeIfPresent(causationId, forKey: .causationId)
        try container.encode(source, forKey: .source)
        try container.encode(data, forKey: .data)
    }
}

/// The envelope's fields without `data`: what a consumer reads first to decide which event type
/// to decode, and what it records in its inbox.
public struct EnvelopeHeader: Codable, Sendable, Equatable {
    public var eventId: UUID
    public var type: String
    public var version: Int
    public var occurredAt: Date
    public var correlationId: UUID
    public var causationId: UUID?
    public var source: ServiceName
}

/// JSON as every service writes and reads it: camelCase keys, ISO-8601 dates with milliseconds
/// (Foundation's default would be seconds since 2001), sorted keys so equal events are equal
/// bytes. UUIDs come out in Foundation's upper case; compare them as values, never as strings.
public enum EventJSON {
    public static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(timestampStyle))
        }
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            if let date = try? timestampStyle.parse(text) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 timestamp: \(text)")
        }
        return try decoder.decode(type, from: data)
    }

    private static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
}
