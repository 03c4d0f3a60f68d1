import Contracts
import EventRuntime
import Foundation
import Postgres

/// The order service's reactions to other services' events.
enum OrderHandlers {
    static func make(store: OrderStore, rebuilds: CatalogueRebuilds) -> EventHandlers {
        var handlers = EventHandlers()
        handlers.on(ProductUpdated.self) { envelope, context in
            store.upsertProduct(envelope.data, in: context.transaction)
        }
        handlers.on(ProductSnapshot.self) { envelope, context in
            try rebuilds.receive(envelope.data, in: context.transaction)
        }
        handlers.on(PaymentCaptured.self) { envelope, context in
            try OrderTransitions.apply(.paymentCaptured, to: envelope.data.orderId, store: store, context: .handler(context))
        }
        handlers.on(PaymentDeclined.self) { envelope, context in
            try OrderTransitions.apply(.paymentDeclined, to: envelope.data.orderId, store: store, context: .handler(context))
        }
        handlers.on(StockRejected.self) { envelope, context in
            try OrderTransitions.apply(.stockRejected, to: envelope.data.orderId, store: store, context: .handler(context))
        }
        return handlers
    }
}

/// Applies an input to a stored order: the state machine decides, this writes the decision and
/// the event it emits, in the caller's transaction.
enum OrderTransitions {
    /// Where the input came from: an event (emitted events name it as their cause) or a request
    /// or timer (they start a new causal chain within the saga).
    enum Origin {
        case handler(HandlerContext)
        case direct(PostgresTransaction, Outbox)

        var transaction: PostgresTransaction {
            switch self {
            case .handler(let context): context.transaction
            case .direct(let transaction, _): transaction
            }
        }

        func emit<Event: DomainEvent>(_ event: Event, orderId: UUID) throws {
            switch self {
            case .handler(let context):
                try context.emit(event)
            case .direct(let transaction, let outbox):
                try outbox.append(EventEnvelope(correlationId: orderId, causationId: nil, data: event), in: transaction)
            }
        }
    }

    /// Returns the decision and the order as it is afterwards, without its lines (not read).
    @discardableResult
    static func apply(
        _ input: OrderInput, to orderId: UUID, store: OrderStore, context: Origin
    ) throws -> (OrderDecision, StoredOrder) {
        guard var order = try store.order(orderId, forUpdate: true, withLines: false, in: context.transaction) else {
            throw PoisonMessage.rejected("no order \(orderId.uuidString.lowercased())")
        }
        let decision = OrderStateMachine.decide(order.status, input)
        switch decision {
        case .confirm:
            store.setStatus(orderId, .confirmed, reason: nil, in: context.transaction)
            try context.emit(OrderConfirmed(orderId: orderId, customerId: order.customerId, total: order.total), orderId: orderId)
            order.status = .confirmed
        case .cancel(let reason):
            store.setStatus(orderId, .cancelled, reason: reason, in: context.transaction)
            try context.emit(OrderCancelled(orderId: orderId, customerId: order.customerId, reason: reason), orderId: orderId)
            order.status = .cancelled
            order.reason = reason
        case .ignore, .refuse:
            break
        }
        // Counted once committed: here for events; a request or the deadline sweep counts after its own commit.
        if case .handler(let handlerContext) = context {
            let finished = order
            handlerContext.afterCommit { OrderMetrics.record(decision, for: finished) }
        }
        return (decision, order)
    }
}
