import Foundation
import Postgres

/// A payment as stored.
public struct Payment: Sendable, Equatable {
    public var paymentId: UUID
    public var orderId: UUID
    public var customerId: String
    public var amount: Int
    public var status: PaymentStatus
}

/// The payment service's SQL, synchronous inside a transaction.
struct PaymentStore: Sendable {
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    /// Serialises the handlers of one order (StockReserved and OrderCancelled may race).
    func lockOrder(_ orderId: UUID, in tx: PostgresTransaction) {
        tx.lock(.paymentOrder, key: orderId.uuidString.lowercased())
    }

    func recordCancellation(_ orderId: UUID, in tx: PostgresTransaction) {
        tx.enqueue("INSERT INTO \(schema).cancelled_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING", orderId)
    }

    /// What deciding a charge needs, read in one round trip: the customer's balance (the account
    /// row locked for the charge that follows), the order's payment if any, and whether the order
    /// was cancelled before its stock was reserved.
    func chargeFacts(
        orderId: UUID, customerId: String, in tx: PostgresTransaction
    ) throws -> (balance: Int?, payment: Payment?, cancelled: Bool) {
        let results = try tx.query(each: [
            PostgresStatement("SELECT balance FROM \(schema).accounts WHERE customer_id = $1 FOR UPDATE", customerId),
            paymentOfOrder(orderId), cancellationOfOrder(orderId),
        ])
        let balance = try results[0].first.map { try $0.decode(Int.self, column: "balance") }
        return (balance, try results[1].first.map(decode), !results[2].isEmpty)
    }

    /// The order's payment if any, and whether its cancellation was recorded, in one round trip.
    func paymentAndCancellation(orderId: UUID, in tx: PostgresTransaction) throws -> (payment: Payment?, cancelled: Bool) {
        let results = try tx.query(each: [paymentOfOrder(orderId), cancellationOfOrder(orderId)])
        return (try results[0].first.map(decode), !results[1].isEmpty)
    }

    /// The order's payment rows.
    private func paymentOfOrder(_ orderId: UUID) -> PostgresStatement {
        PostgresStatement(
            "SELECT payment_id, order_id, customer_id, amount, status FROM \(schema).payments WHERE order_id = $1", orderId)
    }

    private func cancellationOfOrder(_ orderId: UUID) -> PostgresStatement {
        PostgresStatement("SELECT 1 FROM \(schema).cancelled_orders WHERE order_id = $1", orderId)
    }

    func changeBalance(_ customerId: String, by amount: Int, in tx: PostgresTransaction) {
        tx.enqueue(
            "UPDATE \(schema).accounts SET balance = balance + $2, updated_at = now() WHERE customer_id = $1",
            customerId, amount)
    }

    func insert(_ payment: Payment, reason: String?, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(schema).payments (payment_id, order_id, customer_id, amount, status, reason)
            VALUES ($1, $2, $3, $4, $5, $6)
            """, payment.paymentId, payment.orderId, payment.customerId, payment.amount, payment.status.rawValue, reason)
    }

    func setStatus(_ paymentId: UUID, _ status: PaymentStatus, in tx: PostgresTransaction) {
        tx.enqueue(
            "UPDATE \(schema).payments SET status = $2, updated_at = now() WHERE payment_id = $1", paymentId, status.rawValue)
    }

    func payments(orderId: UUID, in tx: PostgresTransaction) throws -> [Payment] {
        let statement = paymentOfOrder(orderId)
        return try tx.query(statement.sql, parameters: statement.parameters).map(decode)
    }

    func balance(_ customerId: String, in tx: PostgresTransaction) throws -> Int? {
        try tx.query("SELECT balance FROM \(schema).accounts WHERE customer_id = $1", customerId).first
            .map { try $0.decode(Int.self, column: "balance") }
    }

    func setBalance(_ customerId: String, _ balance: Int, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(schema).accounts (customer_id, balance) VALUES ($1, $2)
            ON CONFLICT (customer_id) DO UPDATE SET balance = excluded.balance, updated_at = now()
            """, customerId, balance)
    }

    private func decode(_ row: PostgresRow) throws -> Payment {
        Payment(
            paymentId: try row.decode(UUID.self, column: "payment_id"), orderId: try row.decode(UUID.self, column: "order_id"),
            customerId: try row.decode(String.self, column: "customer_id"), amount: try row.decode(Int.self, column: "amount"),
            status: PaymentStatus(rawValue: try row.decode(String.self, column: "status")) ?? .declined)
    }
}
