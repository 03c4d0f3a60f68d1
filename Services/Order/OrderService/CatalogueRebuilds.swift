import Contracts
import EventRuntime
import Foundation
import Postgres

/// A rebuild of the catalogue copy, as stored.
public struct CatalogueRebuild: Sendable, Equatable {
    public enum Status: String, Sendable, Codable {
        /// Waiting for (the rest of) inventory's snapshot; orders read the old copy.
        case building
        /// The snapshot was swapped in.
        case completed
    }

    public var rebuildId: UUID
    public var status: Status
    /// Products in the snapshot, once its first product has arrived.
    public var expected: Int?
    /// Snapshot products staged so far (all of them, once completed).
    public var received: Int
    public var replaced: Int?
    public var keptNewer: Int?
    public var removed: Int?
    public var requestedAt: Date
    public var completedAt: Date?
}

/// Rebuilding the catalogue copy from a snapshot: request it, stage what arrives, swap it in.
/// All SQL, synchronous inside the caller's transaction.
struct CatalogueRebuilds: Sendable {
    /// Quoted, ready for SQL.
    let schema: String

    init(schema: String) throws {
        self.schema = try PostgresIdentifier.quoted(schema)
    }

    private var rebuilds: String { "\(schema).catalogue_rebuilds" }
    private var staging: String { "\(schema).catalogue_staging" }
    private var catalogue: String { "\(schema).catalogue" }

    /// Records a new rebuild and asks inventory for a snapshot, in one transaction.
    func start(_ rebuildId: UUID, outbox: Outbox, in tx: PostgresTransaction) throws -> CatalogueRebuild {
        try tx.execute("INSERT INTO \(rebuilds) (rebuild_id) VALUES ($1)", rebuildId)
        try outbox.append(
            EventEnvelope(correlationId: rebuildId, causationId: nil, data: CatalogueSnapshotRequested(rebuildId: rebuildId)), in: tx)
        return try rebuild(rebuildId, in: tx)!
    }

    func rebuild(_ rebuildId: UUID, forUpdate: Bool = false, in tx: PostgresTransaction) throws -> CatalogueRebuild? {
        guard
            let row = try tx.query(
                """
                SELECT rebuild_id, status, expected, replaced, kept_newer, removed, requested_at, completed_at,
                    (SELECT count(*) FROM \(staging) s WHERE s.rebuild_id = r.rebuild_id)::int AS staged
                FROM \(rebuilds) r WHERE rebuild_id = $1
                """ + (forUpdate ? " FOR UPDATE OF r" : ""), rebuildId
            ).first
        else { return nil }
        let status = CatalogueRebuild.Status(rawValue: try row.decode(String.self, column: "status")) ?? .building
        let expected = try row.decode(Int?.self, column: "expected")
        return CatalogueRebuild(
            rebuildId: rebuildId, status: status, expected: expected,
            // Staged rows are dropped by the swap; by then every expected product was received.
            received: status == .completed ? expected ?? 0 : try row.decode(Int.self, column: "staged"),
            replaced: try row.decode(Int?.self, column: "replaced"), keptNewer: try row.decode(Int?.self, column: "kept_newer"),
            removed: try row.decode(Int?.self, column: "removed"), requestedAt: try row.decode(Date.self, column: "requested_at"),
            completedAt: try row.decode(Date?.self, column: "completed_at"))
    }

    /// Stages one snapshot product; once the snapshot is complete, swaps it in. A product for a
    /// rebuild this service did not start, or one already completed, changes nothing.
    func receive(_ product: ProductSnapshot, in tx: PostgresTransaction) throws {
        guard product.total >= 1, (1...product.total).contains(product.index) else {
            throw PoisonMessage.rejected("snapshot product \(product.index) of \(product.total)")
        }
        // The row lock serialises the products of one rebuild across consumers and instances, so
        // exactly one of them sees the last product arrive, and swaps.
        guard let rebuild = try rebuild(product.rebuildId, forUpdate: true, in: tx), rebuild.status == .building else { return }
        if let expected = rebuild.expected, expected != product.total {
            throw PoisonMessage.rejected("snapshot \(product.rebuildId) said \(expected) products, now \(product.total)")
        }
        try tx.execute(
            """
            INSERT INTO \(staging) (rebuild_id, sku, name, price, revision) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (rebuild_id, sku) DO NOTHING
            """, product.rebuildId, product.sku, product.name, product.price, product.revision)
        try tx.execute("UPDATE \(rebuilds) SET expected = $2 WHERE rebuild_id = $1", product.rebuildId, product.total)
        let staged = try tx.query("SELECT count(*)::int AS n FROM \(staging) WHERE rebuild_id = $1", product.rebuildId)[0]
        if try staged.decode(Int.self, column: "n") == product.total {
            try swap(product.rebuildId, requestedAt: rebuild.requestedAt, in: tx)
        }
    }

    /// Replaces the live copy with the staged snapshot (`CatalogueSwap` decides how), in the
    /// caller's transaction: readers see the old copy until it commits, then the new one.
    private func swap(_ rebuildId: UUID, requestedAt: Date, in tx: PostgresTransaction) throws {
        // Holds off ProductUpdated handlers (they write the live copy) until the swap commits, so
        // none slips in between reading the live copy and writing it; readers are not blocked.
        try tx.execute("LOCK TABLE \(catalogue) IN SHARE ROW EXCLUSIVE MODE")
        let live = try tx.query("SELECT sku, revision, updated_at FROM \(catalogue)").map {
            LiveCatalogueEntry(
                sku: try $0.decode(String.self, column: "sku"), revision: try $0.decode(Int.self, column: "revision"),
                updatedAt: try $0.decode(Date.self, column: "updated_at"))
        }
        let snapshot = try tx.query("SELECT sku, name, price, revision FROM \(staging) WHERE rebuild_id = $1", rebuildId).map {
            SnapshotEntry(
                sku: try $0.decode(String.self, column: "sku"), name: try $0.decode(String.self, column: "name"),
                price: try $0.decode(Int.self, column: "price"), revision: try $0.decode(Int.self, column: "revision"))
        }
        let plan = CatalogueSwap.plan(live: live, snapshot: snapshot, requestedAt: requestedAt)
        for entry in plan.replace {
            try tx.execute(
                """
                INSERT INTO \(catalogue) (sku, name, price, revision) VALUES ($1, $2, $3, $4)
                ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price = excluded.price,
                    revision = excluded.revision, updated_at = now()
                """, entry.sku, entry.name, entry.price, entry.revision)
        }
        for sku in plan.remove { try tx.execute("DELETE FROM \(catalogue) WHERE sku = $1", sku) }
        try tx.execute(
            """
            UPDATE \(rebuilds) SET status = 'completed', replaced = $2, kept_newer = $3, removed = $4, completed_at = clock_timestamp()
            WHERE rebuild_id = $1
            """, rebuildId, plan.replace.count, plan.keptNewer.count, plan.remove.count)
        try tx.execute("DELETE FROM \(staging) WHERE rebuild_id = $1", rebuildId)
    }
}
