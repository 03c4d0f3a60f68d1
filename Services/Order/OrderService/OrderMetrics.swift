import Contracts
import Foundation
import Metrics

/// The saga's outcomes, as the order service sees them: the business view beside the runtime's
/// message counts. Recorded after the transaction that made the change commits, never inside it.
enum OrderMetrics {
    /// `bazaar_orders_placed_total`: orders accepted by `POST /orders` (not idempotent replays).
    static func placed() {
        Counter(label: "bazaar_orders_placed_total").increment()
    }

    /// `bazaar_orders_completed_total{outcome, reason}` and `bazaar_order_saga_duration_seconds{outcome}`,
    /// for a decision that ended an order's saga. An order confirmed and later cancelled by its
    /// customer counts once as each.
    static func record(_ decision: OrderDecision, for order: StoredOrder, at now: Date = Date()) {
        let outcome: String, reason: String
        switch decision {
        case .confirm: (outcome, reason) = ("confirmed", "")
        case .cancel(let why): (outcome, reason) = ("cancelled", why.rawValue)
        case .ignore, .refuse: return
        }
        Counter(label: "bazaar_orders_completed_total", dimensions: [("outcome", outcome), ("reason", reason)]).increment()
        Timer(label: "bazaar_order_saga_duration_seconds", dimensions: [("outcome", outcome)], preferredDisplayUnit: .seconds)
            .record(duration: .milliseconds(Int64(max(0, now.timeIntervalSince(order.createdAt)) * 1000)))
    }
}
