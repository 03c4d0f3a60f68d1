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

    func reservationStatus(_ orderId: UUID, in tx: PostgresTransaction) throws -> ReservationStatus? {
        try tx.query("SELECT status FROM \(schema).reservations WHERE order_id = $1", orderId).first
            .flatMap { ReservationStatus(rawValue: try $0.decode(String.self, column: "status")) }
    }

    func reservationLines(_ orderId: UUID, in tx: PostgresTransaction) throws -> [StockLine] {
        try tx.query("SELECT sku, quantity FROM \(schema).reservation_lines WHERE order_id = $1 ORDER BY sku", orderId)
            .map { StockLine(sku: try $0.decode(String.self, column: "sku"), quantity: try $0.decode(Int.self, column: "quantity")) }
    }

    /// Units available now for each sku, rows locked in sku order (so two orders for the same
    /// products never deadlock); an unknown sku is simply absent.
    func lockAvailable(_ skus: [String], in tx: PostgresTransaction) throws -> [String: Int] {
        var available: [String: Int] = [:]
        for sku in Set(skus).sorted() {
            if let row = try tx.query("SELECT available FROM \(schema).products WHERE sku = $1 FOR UPDATE", sku).first {
                available[sku] = try row.decode(Int.self, column: "available")
            }
        }
        return available
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
