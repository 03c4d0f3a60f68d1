import Contracts
import Foundation
import Postgres

/// A notification as stored.
public struct StoredNotification: Sendable, Equatable {
    public var notificationId: UUID
    public var orderId: UUID
    public var customerId: String
    public var kind: NotificationKind
    public var createdAt: Date
}

/// The notification service's SQL, synchronous inside a transaction.
struct NotificationStore: Sendable {
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    /// Records the notification an event causes; returns false if that event already caused one.
    func record(_ notification: StoredNotification, causedBy eventId: UUID, in tx: PostgresTransaction) throws -> Bool {
        try tx.execute(
            """
            INSERT INTO \(schema).notifications (notification_id, event_id, order_id, customer_id, kind)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING
            """, notification.notificationId, eventId, notification.orderId, notification.customerId,
            notification.kind.rawValue) == 1
    }

    func notifications(orderId: UUID?, customerId: String?, in tx: PostgresTransaction) throws -> [StoredNotification] {
        try tx.query(
            """
            SELECT notification_id, order_id, customer_id, kind, created_at FROM \(schema).notifications
            WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::text IS NULL OR customer_id = $2)
            ORDER BY created_at LIMIT 500
            """, orderId, customerId
        ).map {
            StoredNotification(
                notificationId: try $0.decode(UUID.self, column: "notification_id"),
                orderId: try $0.decode(UUID.self, column: "order_id"),
                customerId: try $0.decode(String.self, column: "customer_id"),
                kind: NotificationKind(rawValue: try $0.decode(String.self, column: "kind")) ?? .orderConfirmed,
                createdAt: try $0.decode(Date.self, column: "created_at"))
        }
    }
}
