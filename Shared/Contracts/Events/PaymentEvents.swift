import Foundation

// Events the payment service publishes on the `payments` exchange.

/// The customer's account was charged for the order.
public struct PaymentCaptured: DomainEvent {
    public static let type = "PaymentCaptured"
    public static let version = 1
    public static let producer = ServiceName.payment
    public static let subject = "payment.captured"

    public var orderId: UUID
    public var paymentId: UUID
    public var customerId: String
    /// Cents.
    public var amount: Int

    public init(orderId: UUID, paymentId: UUID, customerId: String, amount: Int) {
        self.orderId = orderId
        self.paymentId = paymentId
        self.customerId = customerId
        self.amount = amount
    }
}

/// The charge was refused (the balance is too low, or the account unknown).
public struct PaymentDeclined: DomainEvent {
    public static let type = "PaymentDeclined"
    public static let version = 1
    public static let producer = ServiceName.payment
    public static let subject = "payment.declined"

    public var orderId: UUID
    public var customerId: String
    public var amount: Int
    /// `insufficient_funds` or `unknown_account`.
    public var reason: String

    public init(orderId: UUID, customerId: String, amount: Int, reason: String) {
        self.orderId = orderId
        self.customerId = customerId
        self.amount = amount
        self.reason = reason
    }
}

/// A capture was paid back after the order was cancelled.
public struct PaymentRefunded: DomainEvent {
    public static let type = "PaymentRefunded"
    public static let version = 1
    public static let producer = ServiceName.payment
    public static let subject = "payment.refunded"

    public var orderId: UUID
    public var paymentId: UUID
    public var customerId: String
    public var amount: Int

    public init(orderId: UUID, paymentId: UUID, customerId: String, amount: Int) {
        self.orderId = orderId
        self.paymentId = paymentId
        self.customerId = customerId
        self.amount = amount
    }
}
