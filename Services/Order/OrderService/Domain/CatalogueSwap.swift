import Foundation

/// A product in the order service's live copy of the catalogue.
public struct LiveCatalogueEntry: Sendable, Equatable {
    public var sku: String
    public var revision: Int
    /// When this copy last changed (a `ProductUpdated`, or an earlier swap).
    public var updatedAt: Date

    public init(sku: String, revision: Int, updatedAt: Date) {
        self.sku = sku
        self.revision = revision
        self.updatedAt = updatedAt
    }
}

/// A product as a complete snapshot from inventory has it.
public struct SnapshotEntry: Sendable, Equatable {
    public var sku: String
    public var name: String
    public var price: Int
    public var revision: Int

    public init(sku: String, name: String, price: Int, revision: Int) {
        self.sku = sku
        self.name = name
        self.price = price
        self.revision = revision
    }
}

/// How a complete snapshot replaces the live copy of the catalogue, in one transaction.
///
/// The snapshot was taken at some moment after the rebuild was requested; `ProductUpdated`
/// events kept arriving meanwhile and went to the live copy. So the swap must not lose them:
/// - a product in the snapshot replaces the live row unless the live row has a higher revision
///   (an update made after the snapshot was taken, already applied): that one is kept;
/// - a live row absent from the snapshot is removed only if it last changed before the rebuild
///   was requested. Inventory never deletes products, so such a row is stale or corrupt; a row
///   written after the request is a product created after the snapshot was taken, and stays.
public enum CatalogueSwap {
    public struct Plan: Sendable, Equatable {
        /// Snapshot rows to write over (or into) the live copy.
        public var replace: [SnapshotEntry]
        /// Skus whose live row is newer than the snapshot's and is kept.
        public var keptNewer: [String]
        /// Skus to delete from the live copy.
        public var remove: [String]
    }

    public static func plan(live: [LiveCatalogueEntry], snapshot: [SnapshotEntry], requestedAt: Date) -> Plan {
        let liveBySku = Dictionary(live.map { ($0.sku, $0) }, uniquingKeysWith: { first, _ in first })
        let snapshotSkus = Set(snapshot.map(\.sku))
        var plan = Plan(replace: [], keptNewer: [], remove: [])
        for entry in snapshot.sorted(by: { $0.sku < $1.sku }) {
            if let current = liveBySku[entry.sku], current.revision > entry.revision {
                plan.keptNewer.append(entry.sku)
            } else {
                plan.replace.append(entry)
            }
        }
        plan.remove = live.filter { !snapshotSkus.contains($0.sku) && $0.updatedAt < requestedAt }.map(\.sku).sorted()
        return plan
    }
}
