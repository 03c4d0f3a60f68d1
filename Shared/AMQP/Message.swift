import Foundation

/// A value in an AMQP field table (message headers, queue arguments).
public indirect enum AMQPFieldValue: Sendable, Hashable {
    case string(String)
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case timestamp(Date)
    case bytes([UInt8])
    case table(AMQPTable)
    case array([AMQPFieldValue])
    case void

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var int: Int64? { if case .int(let value) = self { value } else { nil } }
    public var table: AMQPTable? { if case .table(let value) = self { value } else { nil } }
    public var array: [AMQPFieldValue]? { if case .array(let value) = self { value } else { nil } }
}

/// An AMQP field table: header or argument names to values.
public typealias AMQPTable = [String: AMQPFieldValue]

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// The basic properties of a message: all optional, as in the protocol.
public struct AMQPProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable
    /// Persistent messages (the default) are written to disk by durable queues.
    public var persistent: Bool
    public var priority: UInt8?
    public var correlationId: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as the protocol spells it (a decimal string).
    public var expiration: String?
    public var messageId: String?
    /// Whole seconds: the protocol has no finer timestamp.
    public var timestamp: Date?
    public var type: String?
    /// Set by the publisher, validated by RabbitMQ against the connection's user.
    public var userId: String?
    public var appId: String?

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable = [:],
        persistent: Bool = true, priority: UInt8? = nil, correlationId: String? = nil, replyTo: String? = nil,
        expiration: String? = nil, messageId: String? = nil, timestamp: Date? = nil, type: String? = nil,
        userId: String? = nil, appId: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.persistent = persistent
        self.priority = priority
        self.correlationId = correlationId
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageId = messageId
        self.timestamp = timestamp
        self.type = type
        self.userId = userId
        self.appId = appId
    }
}

/// A message to publish.
public struct OutgoingMessage: Sendable {
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: AMQPProperties
    /// Ask the broker to return the message when no queue is bound for it, rather than drop it.
    /// On by default: silently lost events are the failure we most want to see.
    public var mandatory: Bool

    public init(
        exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = AMQPProperties(),
        mandatory: Bool = true
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// What the broker said about one published message.
public enum PublishOutcome: Sendable, Equatable {
    /// The broker took responsibility for it (`basic.ack`): it is in every queue it routed to.
    case confirmed
    /// A `mandatory` message no queue was bound for (`basic.return`, then `basic.ack`).
    case returned(replyCode: Int, replyText: String)
    /// The broker refused it (`basic.nack`).
    case nacked
    /// The confirm never came (the channel or connection closed first): publish it again.
    case failed(AMQPError)

    /// `confirmed` as `nil`, anything else as the error `publish(_:)` throws for it.
    public var error: AMQPError? {
        switch self {
        case .confirmed: nil
        case .returned(let code, let text): .unroutable(replyCode: code, replyText: text)
        case .nacked: .nacked
        case .failed(let error): error
        }
    }
}
