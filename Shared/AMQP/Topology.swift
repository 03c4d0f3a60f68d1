/// An exchange to declare.
public struct ExchangeSpec: Sendable, Hashable {
    public enum Kind: String, Sendable { case topic, direct, fanout, headers }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var arguments: AMQPTable

    /// Durable topic exchanges are what Bazaar's services publish to.
    public init(name: String, kind: Kind = .topic, durable: Bool = true, arguments: AMQPTable = [:]) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.arguments = arguments
    }
}

/// A queue to declare, with the arguments RabbitMQ takes at declaration.
///
/// Arguments are set explicitly rather than left to the broker, whose defaults differ across
/// versions (quorum queues got a default delivery limit of 20 in RabbitMQ 4.0, for example).
public struct QueueSpec: Sendable, Hashable {
    public enum Kind: String, Sendable {
        /// Replicated, durable, with poison-message handling (delivery limit). Bazaar's default.
        case quorum
        /// The classic queue: for exclusive or temporary queues and replies.
        case classic
    }

    /// How a quorum queue hands messages to its dead-letter exchange.
    public enum DeadLetterStrategy: String, Sendable {
        /// The broker's default: fire and forget; a message is lost if the target can't take it.
        case atMostOnce = "at-most-once"
        /// The queue keeps a dead-lettered message until the target queue confirmed it. Needs
        /// `overflow: .rejectPublish`.
        case atLeastOnce = "at-least-once"
    }

    public enum Overflow: String, Sendable {
        /// The default: the oldest messages are dropped (or dead-lettered).
        case dropHead = "drop-head"
        /// New messages are refused (a publisher with confirms gets a nack); nothing is dropped.
        case rejectPublish = "reject-publish"
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    /// `x-dead-letter-exchange`: where rejected, expired or over-delivered messages go.
    public var deadLetterExchange: String?
    /// `x-dead-letter-routing-key`: the routing key they go with (their own when `nil`).
    public var deadLetterRoutingKey: String?
    /// `x-delivery-limit` (quorum queues): deliveries before a message is dead-lettered.
    public var deliveryLimit: Int?
    /// `x-message-ttl` in milliseconds: messages older than this are dead-lettered or dropped.
    public var messageTTL: Int?
    /// `x-dead-letter-strategy` (quorum queues): whether dead-lettering itself may lose messages.
    public var deadLetterStrategy: DeadLetterStrategy?
    /// `x-overflow`: what happens when a length limit (set here or by a policy) is reached.
    public var overflow: Overflow?
    /// Any further `x-` arguments.
    public var extraArguments: AMQPTable

    public init(
        name: String, kind: Kind = .quorum, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
        deadLetterExchange: String? = nil, deadLetterRoutingKey: String? = nil, deliveryLimit: Int? = nil,
        messageTTL: Int? = nil, deadLetterStrategy: DeadLetterStrategy? = nil, overflow: Overflow? = nil,
        extraArguments: AMQPTable = [:]
    ) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
        self.deliveryLimit = deliveryLimit
        self.messageTTL = messageTTL
        self.deadLetterStrategy = deadLetterStrategy
        self.overflow = overflow
        self.extraArguments = extraArguments
    }

    /// The declaration arguments, as sent to the broker.
    public var arguments: AMQPTable {
        var arguments = extraArguments
        arguments["x-queue-type"] = .string(kind.rawValue)
        if let deadLetterExchange { arguments["x-dead-letter-exchange"] = .string(deadLetterExchange) }
        if let deadLetterRoutingKey { arguments["x-dead-letter-routing-key"] = .string(deadLetterRoutingKey) }
        if let deliveryLimit { arguments["x-delivery-limit"] = .int(Int64(deliveryLimit)) }
        if let messageTTL { arguments["x-message-ttl"] = .int(Int64(messageTTL)) }
        if let deadLetterStrategy { arguments["x-dead-letter-strategy"] = .string(deadLetterStrategy.rawValue) }
        if let overflow { arguments["x-overflow"] = .string(overflow.rawValue) }
        return arguments
    }
}

/// A binding of a queue to an exchange with a routing-key pattern (`order.*.v1`, `#`…).
public struct BindingSpec: Sendable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String
    public var arguments: AMQPTable

    public init(queue: String, exchange: String, routingKey: String, arguments: AMQPTable = [:]) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// Exchanges, queues and bindings declared together. A connection remembers what it declared and
/// declares it again after every reconnect, so a broker that lost non-durable state (or a fresh
/// node) gets the topology back before consumers resume.
public struct Topology: Sendable, Hashable {
    public var exchanges: [ExchangeSpec]
    public var queues: [QueueSpec]
    public var bindings: [BindingSpec]

    public init(exchanges: [ExchangeSpec] = [], queues: [QueueSpec] = [], bindings: [BindingSpec] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }

    /// This topology followed by `other`'s declarations, without repeating any.
    public func merging(_ other: Topology) -> Topology {
        func appendingNew<T: Hashable>(_ base: [T], _ more: [T]) -> [T] {
            var seen = Set(base)
            return base + more.filter { seen.insert($0).inserted }
        }
        return Topology(
            exchanges: appendingNew(exchanges, other.exchanges), queues: appendingNew(queues, other.queues),
            bindings: appendingNew(bindings, other.bindings))
    }
}
