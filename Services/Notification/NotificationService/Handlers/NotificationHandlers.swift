import Contracts
import EventRuntime
import Foundation

/// Tells the customer (records exactly one notification per event) when an order is confirmed,
/// cancelled or refunded, and queues its delivery to the customer's webhook in the same
/// transaction (sent later by `WebhookDeliveryWorker`, never from here).
enum NotificationHandlers {
    static func make(store: NotificationStore, webhooks: WebhookStore) -> EventHandlers {
        var handlers = EventHandlers()
        handlers.on(OrderConfirmed.self) { envelope, context in
            try notify(.orderConfirmed, orderId: envelope.data.orderId, customerId: envelope.data.customerId, store, webhooks, context)
        }
        handlers.on(OrderCancelled.self) { envelope, context in
            try notify(.orderCancelled, orderId: envelope.data.orderId, customerId: envelope.data.customerId, store, webhooks, context)
        }
        handlers.on(PaymentRefunded.self) { envelope, context in
            try notify(.paymentRefunded, orderId: envelope.data.orderId, customerId: envelope.data.customerId, store, webhooks, context)
        }
        return handlers
    }

    private static func notify(
        _ kind: NotificationKind, orderId: UUID, customerId: String, _ store: NotificationStore, _ webhooks: WebhookStore,
        _ context: HandlerContext
    ) throws {
        let notification = StoredNotification(
            notificationId: .timeOrdered(), orderId: orderId, customerId: customerId, kind: kind, createdAt: Date())
        guard try store.record(notification, causedBy: context.incoming.eventId, in: context.transaction) else { return }
        webhooks.enqueue(notificationId: notification.notificationId, customerId: customerId, in: context.transaction)
        try context.emit(
            NotificationSent(notificationId: notification.notificationId, orderId: orderId, customerId: customerId, kind: kind))
    }
}
