import Foundation

// Events the inventory service publishes on the `inventory` exchange.

/// A quantity of one product.
public struct StockLine: Codable, Sendable, Equatable {
    public var sku: String
    public var quantity: Int

    public init(sku: String, quantity: Int) {
        self.sku = sku
        self.quantity = quantity
    }
}

/// Every line of an order is reserved (all or none).
public struct StockReserved: DomainEvent {
    public static let type = "StockReserved"
    public static let version = 1
    public static let producer = ServiceName.inventory
    public static let subject = "stock.reserved"

    public var orderId: UUID
    public var customerId: String
    public var items: [StockLine]
    /// Cents, carried from OrderPlaced so payment can charge without asking anyone.
    public var total: Int

    public init(orderId: UUID, customerId: String, items: [StockLine], total: Int) {
        self.orderId = orderId
        self.customerId = customerId
        self.items = items
        self.total = total
    }
}

/// At least one line could not be reserved; nothing was.
public struct StockRejected: DomainEvent {
    public static let type = "StockRejected"
    public static let version = 1
    public static let producer = ServiceName.inventory
    public static let subject = "stock.rejected"

    public var orderId: UUID
    /// `out_of_stock` (or `unknown_sku`).
    public var reason: String
    /// The skus that were short.
    public var skus: [String]

    public init(orderId: UUID, reason: String, skus: [String]) {
        self.orderId = orderId
        self.reason = reason
        self.skus = skus
    }
}

/// A reservation was given back after the order was cancelled.
public struct StockReleased: DomainEvent {
    public static let type = "StockReleased"
    public static let version = 1
    public static let producer = ServiceName.inventory
    public static let subject = "stock.released"

    public var orderId: UUID
    public var items: [StockLine]

    public init(orderId: UUID, items: [StockLine]) {
        self.orderId = orderId
        self.items = items
    }
}

/// A product was created or changed. Carries the whole state (event-carried state transfer), so
/// the order service keeps its own catalogue without asking inventory.
public struct ProductUpdated: DomainEvent {
    public static let type = "ProductUpdated"
    public static let version = 1
    public static let producer = ServiceName.inventory
    public static let subject = "product.updated"

    public var sku: String
    public var name: String
    /// Cents.
    public var price: Int
    /// Units available for sale now.
    public var available: Int
    /// A change counter per product: consumers ignore an update older than what they hold.
    public var revision: Int

    public init(sku: String, name: String, price: Int, available: Int, revision: Int) {
        self.sku = sku
        self.name = name
        self.price = price
        self.available = available
        self.revision = revision
    }
}

/// One product as it stands, sent because a snapshot of the whole catalogue was requested
/// (`CatalogueSnapshotRequested`), not because it changed.
///
/// A type of its own rather than a `ProductUpdated` with a flag: nothing changed, so consumers of
/// `ProductUpdated` (who react to changes) must not see a rebuild as a burst of updates; its own
/// routing key (`product.snapshot.v1`) lets only the services that rebuild from snapshots bind
/// it; and `ProductUpdated` v1 stays as it is, with no second version to roll out.
public struct ProductSnapshot: DomainEvent {
    public static let type = "ProductSnapshot"
    public static let version = 1
    public static let producer = ServiceName.inventory
    public static let subject = "product.snapshot"

    /// The rebuild that asked for it (also the envelope's correlation id).
    public var rebuildId: UUID
    /// 1 to `total`: this product's place in the snapshot.
    public var index: Int
    /// How many products the snapshot holds: the rebuild is complete once it has them all.
    public var total: Int
    public var sku: String
    public var name: String
    /// Cents.
    public var price: Int
    /// Units available for sale when the snapshot was taken.
    public var available: Int
    /// The product's revision when the snapshot was taken, as `ProductUpdated` carries it.
    public var revision: Int

    public init(rebuildId: UUID, index: Int, total: Int, sku: String, name: String, price: Int, available: Int, revision: Int) {
        self.rebuildId = rebuildId
        self.index = index
        self.total = total
        self.sku = sku
        self.name = name
        self.price = price
        self.available = available
        self.revision = revision
    }
}

/// The shape of a sku, the same everywhere: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
public enum SkuFormat {
    public static let description = "1-64 letters, digits, - _ ."

    public static func isValid(_ sku: String) -> Bool {
        (1...64).contains(sku.utf8.count)
            && sku.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0))
            }
    }
}

extension String {
    /// Whether the text holds control characters (NUL, line breaks, escapes…), which no name or
    /// id of ours may contain: PostgreSQL refuses NUL in text, and the others only hide things.
    public var containsControlCharacters: Bool {
        unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
