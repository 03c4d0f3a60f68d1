import Contracts
import EventRuntime
import Foundation

/// Inventory's part in the saga: reserve on OrderPlaced, sell on OrderConfirmed, put back on
/// OrderCancelled. And, for a service rebuilding its copy of the catalogue, a snapshot of every
/// product on CatalogueSnapshotRequested.
enum InventoryHandlers {
    static func make(store: InventoryStore) -> EventHandlers {
        var handlers = EventHandlers()
        handlers.on(OrderPlaced.self) { envelope, context in
            let order = envelope.data, tx = context.transaction
            store.lockOrder(order.orderId, in: tx)
            let lines = order.items.map { StockLine(sku: $0.sku, quantity: $0.quantity) }
            let (status, available) = try store.reservationStatusAndLockedStock(order.orderId, skus: lines.map(\.sku), in: tx)
            switch ReservationRules.onPlaced(status, lines: lines, available: available) {
            case .reserve:
                store.adjust(lines, available: -1, reserved: +1, in: tx)
                store.record(order.orderId, .reserved, lines: lines, in: tx)
                try context.emit(StockReserved(orderId: order.orderId, customerId: order.customerId, items: lines, total: order.total))
            case .reject(let skus):
                store.record(order.orderId, .rejected, lines: [], in: tx)
                try context.emit(StockRejected(orderId: order.orderId, reason: "out_of_stock", skus: skus))
            default:
                break
            }
        }
        handlers.on(OrderConfirmed.self) { envelope, context in
            let orderId = envelope.data.orderId, tx = context.transaction
            store.lockOrder(orderId, in: tx)
            let reservation = try store.reservation(orderId, in: tx)
            guard ReservationRules.onConfirmed(reservation.status) == .sell else { return }
            store.adjust(reservation.lines, available: 0, reserved: -1, in: tx)
            store.record(orderId, .sold, lines: [], in: tx)
        }
        handlers.on(OrderCancelled.self) { envelope, context in
            let orderId = envelope.data.orderId, tx = context.transaction
            store.lockOrder(orderId, in: tx)
            let reservation = try store.reservation(orderId, in: tx)
            switch ReservationRules.onCancelled(reservation.status) {
            case .putBack(let from):
                store.adjust(reservation.lines, available: +1, reserved: from == .reserved ? -1 : 0, in: tx)
                store.record(orderId, .released, lines: [], in: tx)
                try context.emit(StockReleased(orderId: orderId, items: reservation.lines))
            case .recordCancellation:
                store.record(orderId, .cancelledBeforePlaced, lines: [], in: tx)
            default:
                break
            }
        }
        handlers.on(CatalogueSnapshotRequested.self) { envelope, context in
            // One transaction reads every product (a consistent snapshot) and writes one event
            // per product; the inbox makes a redelivered request a no-op, so a rebuild gets one
            // snapshot however often its request arrives.
            let rebuildId = envelope.data.rebuildId
            let products = try store.products(in: context.transaction)
            for (offset, product) in products.enumerated() {
                try context.emit(
                    ProductSnapshot(
                        rebuildId: rebuildId, index: offset + 1, total: products.count, sku: product.sku, name: product.name,
                        price: product.price, available: product.available, revision: product.revision))
            }
        }
        return handlers
    }
}
