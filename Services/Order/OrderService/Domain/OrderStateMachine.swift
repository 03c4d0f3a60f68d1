import Contracts

/// Where an order stands.
public enum OrderStatus: String, Codable, Sendable {
    case pending, confirmed, cancelled
}

/// What can happen to an order after it was placed.
public enum OrderInput: Sendable, Equatable {
    case paymentCaptured
    case stockRejected
    case paymentDeclined
    case customerCancelled
    case deadlinePassed
}

/// What the order service does about an input.
public enum OrderDecision: Sendable, Equatable {
    /// pending → confirmed, emit OrderConfirmed.
    case confirm
    /// → cancelled, emit OrderCancelled (inventory releases, payment refunds).
    case cancel(CancellationReason)
    /// Nothing to do: a late or repeated message for an order that has moved on.
    case ignore
    /// The customer asked for something the order's state does not allow.
    case refuse(String)
}

/// The order's state machine, with no I/O: every transition, including the races the saga must
/// survive, in one table.
///
/// | status    | paymentCaptured | stockRejected | paymentDeclined | customerCancelled | deadlinePassed |
/// |-----------|-----------------|---------------|-----------------|-------------------|----------------|
/// | pending   | confirm         | cancel        | cancel          | cancel            | cancel         |
/// | confirmed | ignore          | ignore        | ignore          | cancel            | ignore         |
/// | cancelled | ignore ¹        | ignore        | ignore          | refuse            | ignore         |
///
/// ¹ A capture that arrives after the order was cancelled (it timed out, say) is never turned
/// into a confirmation; payment refunds it when it sees the OrderCancelled.
public enum OrderStateMachine {
    public static func decide(_ status: OrderStatus, _ input: OrderInput) -> OrderDecision {
        switch (status, input) {
        case (.pending, .paymentCaptured): .confirm
        case (.pending, .stockRejected): .cancel(.outOfStock)
        case (.pending, .paymentDeclined): .cancel(.paymentDeclined)
        case (.pending, .customerCancelled), (.confirmed, .customerCancelled): .cancel(.customerCancelled)
        case (.pending, .deadlinePassed): .cancel(.timedOut)
        case (.cancelled, .customerCancelled): .refuse("the order is already cancelled")
        case (.confirmed, _), (.cancelled, _): .ignore
        }
    }
}
