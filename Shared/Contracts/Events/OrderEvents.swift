import Foundation

// Events the order service publishes on the `orders` exchange. Amounts are integer minor units
// (cents) of the shop's single currency.

/// Why an order was cancelled.
public enum CancellationReason: String, Codable, Sendable, CaseIterable {
    case outOfStock = "out_of_stock"
    case paymentDeclined = "payment_declined"
    case customerCancelled = "customer_cancelled"
    case timedOut = "timed_out"
}

/// One line of an order, priced when the order was placed.
public struct OrderLine: Codable, Sendable, Equatable {
    public var sku: String
    public var quantity: Int
    /// Cents per unit, from the order service's copy of the catalogue.
    public var unitPrice: Int

    public init(sku: String, quantity: Int, unitPrice: Int) {
        self.sku = sku
        self.quantity = quantity
        self.unitPrice = unitPrice
    }
}

/// A customer placed an order; it waits for stock and payment. Starts the saga.
public struct OrderPlaced: DomainEvent {
    public static let type = "OrderPlaced"
    public static let version = 1
    public static let producer = ServiceName.order
    public static let subject = "order.placed"

    public var orderId: UUID
    public var customerId: String
    public var items: [OrderLine]
    /// Cents: the sum of quantity × unit price over the lines.
    public var total: Int

    public init(orderId: UUID, customerId: String, items: [OrderLine], total: Int) {
        self.orderId = orderId
        self.customerId = customerId
        self.items = items
        self.total = total
    }
}

/// Stock is reserved and payment captured: the order stands.
public struct OrderConfirmed: DomainEvent {
    public static let type = "OrderConfirmed"
    public static let version = 1
    public static let producer = ServiceName.order
    public static let subject = "order.confirmed"

    public var orderId: UUID
    public var customerId: String
    public var total: Int

    public init(orderId: UUID, customerId: String, total: Int) {
        self.orderId = orderId
        self.customerId = customerId
        self.total = total
    }
}

/// The order is off. Inventory releases what it reserved, payment refunds what it captured.
public struct OrderCancelled: DomainEvent {
    public static let type = "OrderCancelled"
    public static let version = 1
    public static let producer = ServiceName.order
    public static let subject = "order.cancelled"

    public var orderId: UUID
    public var customerId: String
    public var reason: CancellationReason

    public init(orderId: UUID, customerId: String, reason: CancellationReason) {
        self.orderId = orderId
        self.customerId = customerId
        self.reason = reason
    }
}

/// The order service wants the whole catalogue again, to rebuild its copy (`bazaar replay
/// catalogue`). Inventory answers with one `ProductSnapshot` per product, with the same
/// correlation id: the rebuild's id.
public struct CatalogueSnapshotRequested: DomainEvent {
    public static let type = "CatalogueSnapshotRequested"
    public static let version = 1
    public static let producer = ServiceName.order
    public static let subject = "catalogue.requested"

    /// The rebuild this snapshot is for (also the envelope's correlation id).
    public var rebuildId: UUID

    public init(rebuildId: UUID) {
        self.rebuildId = rebuildId
    }
}
