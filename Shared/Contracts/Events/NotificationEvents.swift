import Foundation

// Events the notification service publishes on the `notifications` exchange.

/// What a notification told the customer about.
public enum NotificationKind: String, Codable, Sendable, CaseIterable {
    case orderConfirmed = "order_confirmed"
    case orderCancelled = "order_cancelled"
    case paymentRefunded = "payment_refunded"
}

/// A customer was notified (recorded once per event that caused it).
public struct NotificationSent: DomainEvent {
    public static let type = "NotificationSent"
    public static let version = 1
    public static let producer = ServiceName.notification
    public static let subject = "notification.sent"

    public var notificationId: UUID
    public var orderId: UUID
    public var customerId: String
    public var kind: NotificationKind

    public init(notificationId: UUID, orderId: UUID, customerId: String, kind: NotificationKind) {
        self.notificationId = notificationId
        self.orderId = orderId
        self.customerId = customerId
        self.kind = kind
    }
}
