import Contracts
import Foundation
import Postgres

/// A product as stored.
public struct Product: Sendable, Equatable, Codable {
    public var sku: String
    public var name: String
    public var price: Int
    public var available: Int
    public var reserved: Int
    public var revision: Int
}

/// The inventory service's SQL, synchronous inside a transaction.
struct InventoryStore: Sendable {
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    /// Serialises every handler of one order within inventory (OrderPlaced and OrderCancelled may
    /// reach two instances at once); the lock ends with the transaction.
    func lockOrder(_ orderId: UUID, in tx: PostgresTransaction) {
        tx.lock(.inventoryOrder, key: orderId.uuidString.lowercased())
    }

    /// What placing an order needs, read in one round trip: the order's reservation status, and
    /// the units available now for each sku, product rows locked in sku order (so two orders for
    /// the same products never deadlock); an unknown sku is simply absent.
    func reservationStatusAndLockedStock(
        _ orderId: UUID, skus: [String], in tx: PostgresTransaction
    ) throws -> (status: ReservationStatus?, available: [String: Int]) {
        let skus = Set(skus).sorted()
        let results = try tx.query(
            each: [statusOfReservation(orderId)]
                + skus.map { PostgresStatement("SELECT available FROM \(schema).products WHERE sku = $1 FOR UPDATE", $0) })
        var available: [String: Int] = [:]
        for (sku, rows) in zip(skus, results.dropFirst()) {
            if let row = rows.first { available[sku] = try row.decode(Int.self, column: "available") }
        }
        return (try Self.status(results[0]), available)
    }

    /// The order's reservation status and its reserved lines, in one round trip.
    func reservation(_ orderId: UUID, in tx: PostgresTransaction) throws -> (status: ReservationStatus?, lines: [StockLine]) {
        let results = try tx.query(each: [
            statusOfReservation(orderId),
            PostgresStatement("SELECT sku, quantity FROM \(schema).reservation_lines WHERE order_id = $1 ORDER BY sku", orderId),
        ])
        return (
            try Self.status(results[0]),
            try results[1].map { StockLine(sku: try $0.decode(String.self, column: "sku"), quantity: try $0.decode(Int.self, column: "quantity")) }
        )
    }

    private func statusOfReservation(_ orderId: UUID) -> PostgresStatement {
        PostgresStatement("SELECT status FROM \(schema).reservations WHERE order_id = $1", orderId)
    }

    private static func status(_ rows: [PostgresRow]) throws -> ReservationStatus? {
        try rows.first.flatMap { ReservationStatus(rawValue: try $0.decode(String.self, column: "status")) }
    }

    func record(_ orderId: UUID, _ status: ReservationStatus, lines: [StockLine], in tx: PostgresTransaction) {
        tx.enqueue(
            """
            INSERT INTO \(schema).reservations (order_id, status) VALUES ($1, $2)
            ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, updated_at = now()
            """, orderId, status.rawValue)
        for line in lines {
            tx.enqueue(
                "INSERT INTO \(schema).reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
                orderId, line.sku, line.quantity)
        }
    }

    /// Moves units: `available` and `reserved` change by the given amounts for each line.
    func adjust(_ lines: [StockLine], available availableSign: Int, reserved reservedSign: Int, in tx: PostgresTransaction) {
        for line in lines.sorted(by: { $0.sku < $1.sku }) {
            tx.enqueue(
                """
                UPDATE \(schema).products
                SET available = available + $2, reserved = reserved + $3, updated_at = now()
                WHERE sku = $1
                """, line.sku, availableSign * line.quantity, reservedSign * line.quantity)
        }
    }

    func products(in tx: PostgresTransaction) throws -> [Product] {
        try tx.query("SELECT sku, name, price, available, reserved, revision FROM \(schema).products ORDER BY sku").map(decode)
    }

    func product(_ sku: String, in tx: PostgresTransaction) throws -> Product? {
        try tx.query("SELECT sku, name, price, available, reserved, revision FROM \(schema).products WHERE sku = $1", sku)
            .first.map(decode)
    }

    /// Creates or replaces a product's name, price and available stock; returns it as stored.
    func upsert(sku: String, name: String, price: Int, stock: Int, in tx: PostgresTransaction) throws -> Product {
        let row = try tx.query(
            """
            INSERT INTO \(schema).products (sku, name, price, available) VALUES ($1, $2, $3, $4)
            ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price = excluded.price,
                available = excluded.available, revision = \(schema).products.revision + 1, updated_at = now()
            RETURNING sku, name, price, available, reserved, revision
            """, sku, name, price, stock)
        return try decode(row[0])
    }

    private func decode(_ row: PostgresRow) throws -> Product {
        Product(
            sku: try row.decode(String.self, column: "sku"), name: try row.decode(String.self, column: "name"),
            price: try row.decode(Int.self, column: "price"), available: try row.decode(Int.self, column: "available"),
            reserved: try row.decode(Int.self, column: "reserved"), revision: try row.decode(Int.self, column: "revision"))
    }
}
