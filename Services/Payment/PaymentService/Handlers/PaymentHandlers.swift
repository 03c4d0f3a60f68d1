import Contracts
import EventRuntime
import Foundation

/// Payment's part in the saga: charge on StockReserved, refund on OrderCancelled.
enum PaymentHandlers {
    static func make(store: PaymentStore) -> EventHandlers {
        var handlers = EventHandlers()
        handlers.on(StockReserved.self) { envelope, context in
            let reserved = envelope.data, tx = context.transaction
            store.lockOrder(reserved.orderId, in: tx)
            let facts = try store.chargeFacts(orderId: reserved.orderId, customerId: reserved.customerId, in: tx)
            let decision = PaymentRules.onStockReserved(
                payment: facts.payment?.status, cancelled: facts.cancelled, balance: facts.balance, amount: reserved.total)
            let payment = Payment(
                paymentId: .timeOrdered(), orderId: reserved.orderId, customerId: reserved.customerId, amount: reserved.total,
                status: .captured)
            switch decision {
            case .capture:
                store.changeBalance(reserved.customerId, by: -reserved.total, in: tx)
                store.insert(payment, reason: nil, in: tx)
                try context.emit(
                    PaymentCaptured(
                        orderId: reserved.orderId, paymentId: payment.paymentId, customerId: reserved.customerId,
                        amount: reserved.total))
            case .decline(let reason):
                var declined = payment
                declined.status = .declined
                store.insert(declined, reason: reason, in: tx)
                try context.emit(
                    PaymentDeclined(orderId: reserved.orderId, customerId: reserved.customerId, amount: reserved.total, reason: reason))
            default:
                break
            }
        }
        handlers.on(OrderCancelled.self) { envelope, context in
            let orderId = envelope.data.orderId, tx = context.transaction
            store.lockOrder(orderId, in: tx)
            let (payment, cancelled) = try store.paymentAndCancellation(orderId: orderId, in: tx)
            switch PaymentRules.onOrderCancelled(payment: payment?.status, cancelled: cancelled) {
            case .refund:
                guard let payment else { return }
                store.changeBalance(payment.customerId, by: payment.amount, in: tx)
                store.setStatus(payment.paymentId, .refunded, in: tx)
                try context.emit(
                    PaymentRefunded(
                        orderId: orderId, paymentId: payment.paymentId, customerId: payment.customerId, amount: payment.amount))
            case .recordCancellation:
                store.recordCancellation(orderId, in: tx)
            default:
                break
            }
        }
        return handlers
    }
}
