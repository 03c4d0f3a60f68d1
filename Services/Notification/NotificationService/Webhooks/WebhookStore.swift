import Contracts
import Foundation
import Postgres

/// A customer's webhook as stored (the secret stays in the database after it was handed out).
struct StoredWebhook: Sendable {
    var webhookId: UUID
    var customerId: String
    var url: String
    var createdAt: Date
    var updatedAt: Date
}

/// A delivery's state, as `GET /notifications` shows it.
struct DeliveryStatus: Sendable {
    var deliveryId: UUID
    var notificationId: UUID
    var host: String
    var state: String
    var attempts: Int
    var nextAttemptAt: Date?
    var lastStatus: Int?
    var lastError: String?
}

/// A due delivery a worker has claimed, with what it needs to send it.
struct ClaimedDelivery: Sendable {
    var deliveryId: UUID
    var attempts: Int
    var url: String
    var host: String
    var secret: String
    var notification: StoredNotification
}

/// The webhook tables' SQL, synchronous inside a transaction.
struct WebhookStore: Sendable {
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    /// Registers the customer's webhook, or replaces its URL and secret.
    func put(customerId: String, target: WebhookTarget, secret: String, in tx: PostgresTransaction) throws -> StoredWebhook {
        let row = try tx.query(
            """
            INSERT INTO \(schema).webhooks (webhook_id, customer_id, url, host, secret) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (customer_id) DO UPDATE SET url = EXCLUDED.url, host = EXCLUDED.host, secret = EXCLUDED.secret,
                updated_at = now()
            RETURNING webhook_id, customer_id, url, created_at, updated_at
            """, UUID(), customerId, target.url.absoluteString, target.host, secret)[0]
        // Deliveries still waiting go to the new address (a customer who moved their receiver
        // wants them there), so they take its host, for the breaker.
        try tx.execute(
            "UPDATE \(schema).webhook_deliveries SET host = $2 WHERE webhook_id = $1 AND state = 'pending'",
            try row.decode(UUID.self, column: "webhook_id"), target.host)
        return try Self.webhook(row)
    }

    func webhook(customerId: String, in tx: PostgresTransaction) throws -> StoredWebhook? {
        try tx.query(
            "SELECT webhook_id, customer_id, url, created_at, updated_at FROM \(schema).webhooks WHERE customer_id = $1",
            customerId
        ).first.map(Self.webhook)
    }

    /// Removes the customer's webhook; its pending deliveries fail, visibly. False if there was none.
    func delete(customerId: String, in tx: PostgresTransaction) throws -> Bool {
        try tx.execute(
            """
            UPDATE \(schema).webhook_deliveries SET state = 'failed', last_error = 'the webhook was removed', updated_at = now()
            WHERE state = 'pending' AND webhook_id = (SELECT webhook_id FROM \(schema).webhooks WHERE customer_id = $1)
            """, customerId)
        return try tx.execute("DELETE FROM \(schema).webhooks WHERE customer_id = $1", customerId) == 1
    }

    /// Queues a delivery of the notification to each webhook of its customer (in the transaction
    /// that records it).
    func enqueue(notificationId: UUID, customerId: String, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(schema).webhook_deliveries (delivery_id, notification_id, webhook_id, host)
            SELECT gen_random_uuid(), $1, webhook_id, host FROM \(schema).webhooks WHERE customer_id = $2
            """, notificationId, customerId)
    }

    /// Claims up to `limit` due deliveries: locks them (skipping rows another worker holds),
    /// and leases them until `leaseEnd` by moving their due time, then commits — the requests
    /// are sent outside any transaction. At most `perHost` per host, less what `busy` says this
    /// worker already has in flight to it: a slow receiver can't take every slot.
    func claimDue(
        limit: Int, perHost: Int, busy: [String: Int], lease: Duration, in tx: PostgresTransaction
    ) throws -> [ClaimedDelivery] {
        // Hosts are URL hosts, which contain no spaces: a space-separated list binds as one text.
        let busyHosts = busy.keys.sorted()
        return try tx.query(
            """
            WITH busy AS (
                SELECT * FROM unnest(string_to_array($3, ' '), string_to_array($4, ' ')::int[]) AS b(host, in_flight)
            ), ranked AS (
                SELECT c.delivery_id, c.next_attempt_at,
                    row_number() OVER (PARTITION BY c.host ORDER BY c.next_attempt_at) + coalesce(b.in_flight, 0) AS slot
                FROM \(schema).webhook_deliveries c LEFT JOIN busy b ON b.host = c.host
                WHERE c.state = 'pending' AND c.next_attempt_at <= now() AND c.webhook_id IS NOT NULL
            ), due AS (
                -- Due-ness is checked again on the locked row itself: another instance may have
                -- claimed it (and committed) since this query's snapshot, and FOR UPDATE re-checks
                -- only this level's conditions on the row's newest version.
                SELECT d.delivery_id FROM \(schema).webhook_deliveries d JOIN ranked r ON r.delivery_id = d.delivery_id
                WHERE r.slot <= $5 AND d.state = 'pending' AND d.next_attempt_at <= now()
                ORDER BY r.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED
            )
            UPDATE \(schema).webhook_deliveries d SET next_attempt_at = now() + $2 * interval '1 millisecond'
            FROM due, \(schema).webhooks w, \(schema).notifications n
            WHERE d.delivery_id = due.delivery_id AND w.webhook_id = d.webhook_id AND n.notification_id = d.notification_id
            RETURNING d.delivery_id, d.attempts, w.url, w.host, w.secret,
                n.notification_id, n.order_id, n.customer_id, n.kind, n.created_at
            """, limit, Self.milliseconds(lease), busyHosts.joined(separator: " "),
            busyHosts.map { String(busy[$0]!) }.joined(separator: " "), perHost
        ).map {
            ClaimedDelivery(
                deliveryId: try $0.decode(UUID.self, column: "delivery_id"),
                attempts: try $0.decode(Int.self, column: "attempts"),
                url: try $0.decode(String.self, column: "url"),
                host: try $0.decode(String.self, column: "host"),
                secret: try $0.decode(String.self, column: "secret"),
                notification: StoredNotification(
                    notificationId: try $0.decode(UUID.self, column: "notification_id"),
                    orderId: try $0.decode(UUID.self, column: "order_id"),
                    customerId: try $0.decode(String.self, column: "customer_id"),
                    kind: NotificationKind(rawValue: try $0.decode(String.self, column: "kind")) ?? .orderConfirmed,
                    createdAt: try $0.decode(Date.self, column: "created_at")))
        }
    }

    /// The receiver took it.
    func markDelivered(_ deliveryId: UUID, attempts: Int, status: Int, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            UPDATE \(schema).webhook_deliveries SET state = 'delivered', attempts = $2, last_status = $3, last_error = NULL,
                updated_at = now()
            WHERE delivery_id = $1 AND state = 'pending'
            """, deliveryId, attempts, status)
    }

    /// An attempt failed: try again after `retryAfter`, or give up (`failed`) when it is nil.
    func markFailedAttempt(
        _ deliveryId: UUID, attempts: Int, status: Int?, error: String, retryAfter: Duration?, in tx: PostgresTransaction
    ) {
        tx.enqueue(
            """
            UPDATE \(schema).webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4,
                state = CASE WHEN $5::bigint IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = CASE WHEN $5::bigint IS NULL THEN next_attempt_at
                    ELSE now() + $5::bigint * interval '1 millisecond' END,
                updated_at = now()
            WHERE delivery_id = $1 AND state = 'pending'
            """, deliveryId, attempts, status, String(error.prefix(500)), retryAfter.map(Self.milliseconds))
    }

    /// Not attempted (the host's breaker is open): due again after `delay`, attempts unchanged.
    func postpone(_ deliveryId: UUID, by delay: Duration, reason: String, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            UPDATE \(schema).webhook_deliveries SET next_attempt_at = now() + $2 * interval '1 millisecond', last_error = $3,
                updated_at = now()
            WHERE delivery_id = $1 AND state = 'pending'
            """, deliveryId, Self.milliseconds(delay), reason)
    }

    func deliveries(of notificationIds: [UUID], in tx: PostgresTransaction) throws -> [DeliveryStatus] {
        guard !notificationIds.isEmpty else { return [] }
        let list = notificationIds.map { $0.uuidString.lowercased() }.joined(separator: ",")
        return try tx.query(
            """
            SELECT delivery_id, notification_id, host, state, attempts, last_status, last_error,
                CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at
            FROM \(schema).webhook_deliveries WHERE notification_id = ANY(string_to_array($1, ',')::uuid[])
            ORDER BY created_at
            """, list
        ).map {
            DeliveryStatus(
                deliveryId: try $0.decode(UUID.self, column: "delivery_id"),
                notificationId: try $0.decode(UUID.self, column: "notification_id"),
                host: try $0.decode(String.self, column: "host"),
                state: try $0.decode(String.self, column: "state"),
                attempts: try $0.decode(Int.self, column: "attempts"),
                nextAttemptAt: try $0.decode(Date?.self, column: "next_attempt_at"),
                lastStatus: try $0.decode(Int?.self, column: "last_status"),
                lastError: try $0.decode(String?.self, column: "last_error"))
        }
    }

    private static func webhook(_ row: PostgresRow) throws -> StoredWebhook {
        StoredWebhook(
            webhookId: try row.decode(UUID.self, column: "webhook_id"),
            customerId: try row.decode(String.self, column: "customer_id"),
            url: try row.decode(String.self, column: "url"),
            createdAt: try row.decode(Date.self, column: "created_at"),
            updatedAt: try row.decode(Date.self, column: "updated_at"))
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
