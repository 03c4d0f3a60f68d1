/// The four services of Bazaar. Each publishes only to its own topic exchange and consumes from
/// queues named after itself.
public enum ServiceName: String, Sendable, Codable, CaseIterable {
    case order, inventory, payment, notification

    /// The durable topic exchange this service publishes its events to.
    public var exchange: String {
        switch self {
        case .order: "orders"
        case .inventory: "inventory"
        case .payment: "payments"
        case .notification: "notifications"
        }
    }

    /// The quorum queue this service consumes from; every event it reacts to is bound to it.
    public var queue: String { rawValue }

    /// Where this service's queue dead-letters messages it can't or won't process.
    public var deadLetterExchange: String { "\(rawValue).dlx" }
    public var deadLetterQueue: String { "\(rawValue).dlq" }

    /// Where this service sends a delivery whose handler failed, to come back after a delay:
    /// it routes to the service's retry queues, whose expired messages it routes back to `queue`.
    public var retryExchange: String { "\(rawValue).retry" }
}
