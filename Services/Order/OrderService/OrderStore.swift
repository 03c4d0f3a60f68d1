import Contracts
import Foundation
import Postgres

/// An order as stored.
public struct StoredOrder: Sendable, Equatable {
    public var orderId: UUID
    public var customerId: String
    public var status: OrderStatus
    public var reason: CancellationReason?
    public var lines: [OrderLine]
    public var total: Int
    public var createdAt: Date
}

/// The order service's SQL, all of it synchronous inside a transaction.
struct OrderStore: Sendable {
    /// Quoted, ready for SQL.
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    private var orders: String { "\(schema).orders" }
    private var lines: String { "\(schema).order_lines" }
    private var catalogue: String { "\(schema).catalogue" }

    /// Queues the insert of a new order and its lines; they go to the database with the commit.
    /// Its `created_at` is the transaction's `now()`, the clock `pricesAndClock` read: the order
    /// as stored is `order` stamped with that time, so there is nothing to read back.
    func insert(_ order: StoredOrder, idempotencyKey: String?, deadline: Duration, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(orders) (order_id, customer_id, status, total, idempotency_key, deadline_at)
            VALUES ($1, $2, 'pending', $3, $4, now() + make_interval(secs => $5))
            """, order.orderId, order.customerId, order.total, idempotencyKey, Int(deadline.components.seconds))
        for (index, line) in order.lines.enumerated() {
            tx.enqueue(
                "INSERT INTO \(lines) (order_id, line, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5)",
                order.orderId, index + 1, line.sku, line.quantity, line.unitPrice)
        }
    }

    /// An order; `withLines: false` leaves its lines empty and saves their query (a transition of
    /// its status never needs them).
    func order(_ orderId: UUID, forUpdate: Bool = false, withLines: Bool = true, in tx: PostgresTransaction) throws -> StoredOrder? {
        let rows = try tx.query(
            "SELECT order_id, customer_id, status, reason, total, created_at FROM \(orders) WHERE order_id = $1"
                + (forUpdate ? " FOR UPDATE" : ""), orderId)
        return try decode(rows, withLines: withLines, in: tx).first
    }

    func order(customerId: String, idempotencyKey: String, in tx: PostgresTransaction) throws -> StoredOrder? {
        let rows = try tx.query(
            """
            SELECT order_id, customer_id, status, reason, total, created_at FROM \(orders)
            WHERE customer_id = $1 AND idempotency_key = $2
            """, customerId, idempotencyKey)
        return try decode(rows, in: tx).first
    }

    func orders(customerId: String, limit: Int, in tx: PostgresTransaction) throws -> [StoredOrder] {
        try decode(
            tx.query(
                """
                SELECT order_id, customer_id, status, reason, total, created_at FROM \(orders)
                WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2
                """, customerId, limit), in: tx)
    }

    func setStatus(_ orderId: UUID, _ status: OrderStatus, reason: CancellationReason?, in tx: PostgresTransaction) {
        tx.enqueue(
            "UPDATE \(orders) SET status = $2, reason = $3, updated_at = now() WHERE order_id = $1",
            orderId, status.rawValue, reason?.rawValue)
    }

    /// Pending orders past their deadline, locked; several instances sweeping at once split them.
    func overduePending(limit: Int, in tx: PostgresTransaction) throws -> [StoredOrder] {
        try decode(
            tx.query(
                """
                SELECT order_id, customer_id, status, reason, total, created_at FROM \(orders)
                WHERE status = 'pending' AND deadline_at < now()
                ORDER BY deadline_at LIMIT $1
                FOR UPDATE SKIP LOCKED
                """, limit), in: tx)
    }

    /// The current prices of `skus` (an unknown sku is absent), and the transaction's clock
    /// (`now()`, fixed for the whole transaction: a new order's creation time), in one round trip.
    func pricesAndClock(of skus: [String], in tx: PostgresTransaction) throws -> (prices: [String: Int], now: Date) {
        // Skus are validated (letters, digits, - _ .), so quoting each is enough to make an array
        // literal of them (quoted, so that a sku spelled NULL stays a string).
        let literal = "{" + skus.map { "\"\($0)\"" }.joined(separator: ",") + "}"
        let results = try tx.query(each: [
            PostgresStatement("SELECT sku, price FROM \(catalogue) WHERE sku = ANY($1::text[])", literal),
            PostgresStatement("SELECT now() AS now"),
        ])
        let prices = Dictionary(
            uniqueKeysWithValues: try results[0].map { (try $0.decode(String.self, column: "sku"), try $0.decode(Int.self, column: "price")) })
        return (prices, try results[1][0].decode(Date.self, column: "now"))
    }

    /// Keeps the newest revision of a product; an older event arriving late changes nothing.
    func upsertProduct(_ product: ProductUpdated, in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(catalogue) (sku, name, price, revision) VALUES ($1, $2, $3, $4)
            ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price = excluded.price,
                revision = excluded.revision, updated_at = now()
            WHERE \(catalogue).revision < excluded.revision
            """, product.sku, product.name, product.price, product.revision)
    }

    /// Orders from their rows, with the lines of all of them read in one query.
    private func decode(_ rows: [PostgresRow], withLines: Bool = true, in tx: PostgresTransaction) throws -> [StoredOrder] {
        guard !rows.isEmpty else { return [] }
        let ids = try rows.map { try $0.decode(UUID.self, column: "order_id") }
        let lineRows =
            withLines
            ? try tx.query(
                "SELECT order_id, sku, quantity, unit_price FROM \(lines) WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line",
                "{" + ids.map { $0.uuidString.lowercased() }.joined(separator: ",") + "}")
            : []
        var linesByOrder: [UUID: [OrderLine]] = [:]
        for row in lineRows {
            linesByOrder[try row.decode(UUID.self, column: "order_id"), default: []].append(
                OrderLine(
                    sku: try row.decode(String.self, column: "sku"), quantity: try row.decode(Int.self, column: "quantity"),
                    unitPrice: try row.decode(Int.self, column: "unit_price")))
        }
        return try zip(rows, ids).map { row, orderId in
            StoredOrder(
                orderId: orderId, customerId: try row.decode(String.self, column: "customer_id"),
                status: OrderStatus(rawValue: try row.decode(String.self, column: "status")) ?? .pending,
                reason: try row.decode(String?.self, column: "reason").flatMap(CancellationReason.init(rawValue:)),
                lines: linesByOrder[orderId] ?? [], total: try row.decode(Int.self, column: "total"),
                createdAt: try row.decode(Date.self, column: "created_at"))
        }
    }
}

